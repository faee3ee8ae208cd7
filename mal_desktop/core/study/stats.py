"""The study's statistics: intervals, tests, noise baselines and the verdict rule.

Every check of a law is one of these, over a list of units (pairs of curves, chains of merges)
measured on several zoo seeds:

- a **paired check**: one signed difference per unit (e.g. naive minus aligned loss of the same
  pair), the claim predicting its sign. Test: Wilcoxon signed-rank (two-sided, scipy.stats),
  or the exact sign test for 0/1 outcomes.
- a **group check** (law 2): does a value depend on the configuration beyond seed noise?
  Kruskal-Wallis over configurations, seeds as the replicates.
- a **share check** (law 2): the share of configurations with a property, exact binomial test
  against a stated share.

Each reports n, the mean effect with a 95% percentile-bootstrap interval (resampling units,
seeded, so reruns give the same interval), the p-value, and the **noise baseline**: the pooled
standard deviation of the unit's value across seeds of the same configuration (how far a single
measurement moves when only the zoo seeds change). The minimum effect a check must show is that
noise, or one grid step for lambda* comparisons when that is larger (a difference smaller than
the grid's resolution is not measured).

Verdict of a check (:func:`judge`), with alpha = 0.05:

- **held**: p < alpha, the interval excludes zero on the predicted side, and the mean effect in
  the predicted direction exceeds the minimum effect;
- **did not hold**: the same, in the opposite direction;
- **not resolved**: anything else (too few units, p >= alpha, interval across zero, or an effect
  within the noise or the grid's resolution);
- **not measured**: no units.

A law's verdict combines its checks (:func:`combine`): held when all held, partly held when
some held, did not hold when none held and one did not hold, else not resolved.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import mean
from typing import Any, Sequence

import numpy as np

HELD, PARTLY, NOT_HELD = "held", "partly held", "did not hold"
NOT_RESOLVED, NOT_MEASURED = "not resolved", "not measured"
ALPHA = 0.05
LEVEL = 0.95
RESAMPLES = 4000
BOOT_SEED = 20260509

Check = dict[str, Any]


def finite(xs: Sequence[Any]) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def avg(xs: Sequence[Any]) -> float:
    xs = finite(xs)
    return mean(xs) if xs else math.nan


def bootstrap_ci(values: Sequence[float], stat=np.mean, seed: int = BOOT_SEED,
                 resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``stat`` over ``values`` (resampled with
    replacement; a fixed seed, so the same values give the same interval)."""
    x = np.asarray(finite(values), dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.Generator(np.random.PCG64(seed))
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    stats = np.array([stat(x[i]) for i in idx]) if stat is not np.mean else x[idx].mean(axis=1)
    lo, hi = np.quantile(stats, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return (float(lo), float(hi))


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "ci", "n"} of ``values`` (for descriptive tables)."""
    xs = finite(values)
    return {"mean": avg(xs), "ci": list(bootstrap_ci(xs)), "n": len(xs)}


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``diffs`` against zero; 1.0 when every
    difference is zero (scipy's 'zsplit' keeps zero differences in the ranking)."""
    from scipy.stats import wilcoxon

    d = finite(diffs)
    if not d:
        return math.nan
    if all(x == 0 for x in d):
        return 1.0
    return float(wilcoxon(d, zero_method="zsplit", alternative="two-sided").pvalue)


def sign_p(diffs: Sequence[float]) -> float:
    """Two-sided exact sign test of ``diffs`` against zero (zeros left out)."""
    from scipy.stats import binomtest

    d = [x for x in finite(diffs) if x != 0]
    if not d:
        return 1.0
    return float(binomtest(sum(x > 0 for x in d), len(d), 0.5).pvalue)


def noise_sd(values: Sequence[float], configs: Sequence[str]) -> float:
    """Pooled within-configuration standard deviation: how much a value moves between seeds of
    the same configuration. NaN when no configuration has two seeds."""
    groups: dict[str, list[float]] = defaultdict(list)
    for v, c in zip(values, configs):
        if v is not None and math.isfinite(v):
            groups[c].append(float(v))
    ss = dof = 0.0
    for g in groups.values():
        if len(g) > 1:
            m = mean(g)
            ss += sum((x - m) ** 2 for x in g)
            dof += len(g) - 1
    return math.sqrt(ss / dof) if dof else math.nan


def judge(direction: int, effect: float, ci: Sequence[float], p: float, minimum: float,
          n: int, min_p: float = 0.0) -> tuple[str, str]:
    """(verdict, reason) of one check by the rule in the module docstring. ``direction`` +1
    when the claim predicts a positive effect, -1 a negative one. ``min_p``: the smallest p
    the test can give with n units (a reason of its own when it is not below alpha)."""
    if n == 0 or effect is None or not math.isfinite(effect):
        return NOT_MEASURED, "no measurements"
    lo, hi = ci
    m = minimum if minimum is not None and math.isfinite(minimum) else 0.0
    if not (p is not None and math.isfinite(p) and p < ALPHA):
        if min_p >= ALPHA:  # the design, not the data: say so (a quick run's few seeds)
            return NOT_RESOLVED, (f"n = {n} cannot resolve it: the smallest p this test can "
                                  f"give with {n} units is {min_p:.3g}")
        return NOT_RESOLVED, f"p = {p:.3g} is not below {ALPHA:g}"
    for sign, verdict in ((direction, HELD), (-direction, NOT_HELD)):
        if sign * lo > 0 and sign * hi > 0:
            if sign * effect > m:
                return verdict, ("as predicted" if verdict == HELD else
                                 "significant in the opposite direction")
            return NOT_RESOLVED, (f"significant, but the effect {abs(effect):.3g} is within "
                                  f"the minimum effect {m:.3g} (noise or grid resolution)")
    return NOT_RESOLVED, "the 95% interval includes zero"


def _check(name: str, claim: str, test: str, unit: str, n: int, effect: float,
           ci: Sequence[float], p: float, noise: float, resolution: float, direction: int,
           min_p: float = 0.0, **extra: Any) -> Check:
    minimum = max(x for x in (noise, resolution, 0.0) if x is not None and math.isfinite(x))
    verdict, reason = judge(direction, effect, ci, p, minimum, n, min_p)
    return {"name": name, "claim": claim, "test": test, "unit": unit, "n": n,
            "effect": effect, "ci": [float(ci[0]), float(ci[1])], "p": p,
            "noise": noise, "resolution": resolution, "minimum_effect": minimum,
            "direction": direction, "verdict": verdict, "reason": reason,
            "min_p": min_p, **extra}


def smallest_paired_p(n: int) -> float:
    """The smallest two-sided p of an exact sign or signed-rank test on n nonzero paired
    differences (all of one sign): 2 / 2^n. Below 0.05 from n = 6 on."""
    return 2.0 ** (1 - n) if n > 0 else 1.0


def paired_check(name: str, claim: str, diffs: Sequence[float], configs: Sequence[str],
                 direction: int, unit: str, resolution: float = 0.0,
                 test: str = "wilcoxon", **extra: Any) -> Check:
    """A check of the sign of per-unit differences ``diffs`` (``configs``: each unit's
    configuration, for the noise baseline). ``test``: "wilcoxon" or "sign"."""
    pairs = [(float(d), c) for d, c in zip(diffs, configs)
             if d is not None and math.isfinite(float(d))]
    d = [x for x, _ in pairs]
    p = (sign_p(d) if test == "sign" else wilcoxon_p(d)) if d else math.nan
    name_of = {"wilcoxon": "Wilcoxon signed-rank, two-sided", "sign": "exact sign test, two-sided"}
    return _check(name, claim, name_of[test], unit, len(d), avg(d), bootstrap_ci(d), p,
                  noise_sd(d, [c for _, c in pairs]), resolution, direction,
                  smallest_paired_p(len(d)), **extra)


def group_check(name: str, claim: str, values: Sequence[float], configs: Sequence[str],
                unit: str, resolution: float = 0.0, **extra: Any) -> Check:
    """Does ``values`` depend on the configuration beyond seed noise? Effect: the standard
    deviation of the configurations' means; noise: the pooled seed-to-seed deviation; test:
    Kruskal-Wallis over the configurations with at least two seeds; interval: bootstrap over
    configurations."""
    from scipy.stats import kruskal

    groups: dict[str, list[float]] = defaultdict(list)
    for v, c in zip(values, configs):
        if v is not None and math.isfinite(v):
            groups[c].append(float(v))
    multi = [g for g in groups.values() if len(g) > 1]
    means = [mean(g) for g in groups.values()]
    n = sum(len(g) for g in multi)
    p = math.nan
    if len(multi) > 1:
        try:
            p = float(kruskal(*multi).pvalue)
        except ValueError:  # every value equal
            p = 1.0
    spread = float(np.std(means, ddof=1)) if len(means) > 1 else math.nan
    ci = bootstrap_ci(means, stat=lambda x: float(np.std(x, ddof=1))) if len(means) > 1 \
        else (math.nan, math.nan)
    return _check(name, claim, "Kruskal-Wallis over configurations", unit, n, spread, ci, p,
                  noise_sd(values, configs), resolution, +1, configurations=len(multi),
                  **extra)


def share_check(name: str, claim: str, flags: Sequence[bool], share: float, unit: str,
                **extra: Any) -> Check:
    """Is the share of ``flags`` that are true above ``share``? Exact binomial test
    (two-sided); effect: observed share minus ``share``, interval by bootstrap."""
    from scipy.stats import binomtest

    x = [1.0 if f else 0.0 for f in flags]
    if not x:
        return _check(name, claim, "exact binomial test", unit, 0, math.nan,
                      (math.nan, math.nan), math.nan, math.nan, 0.0, +1, **extra)
    p = float(binomtest(int(sum(x)), len(x), share).pvalue)
    lo, hi = bootstrap_ci(x)
    return _check(name, claim, f"exact binomial test against {share:.0%}, two-sided", unit,
                  len(x), avg(x) - share, (lo - share, hi - share), p, 0.0, 0.0, +1,
                  share=avg(x), null_share=share, **extra)


def combine(checks: Sequence[Check]) -> str:
    """A law's verdict from its checks' verdicts (see the module docstring)."""
    verdicts = [c["verdict"] for c in checks if c["verdict"] != NOT_MEASURED]
    if not verdicts:
        return NOT_MEASURED
    if all(v == HELD for v in verdicts):
        return HELD
    if HELD in verdicts:
        return PARTLY
    return NOT_HELD if NOT_HELD in verdicts else NOT_RESOLVED
