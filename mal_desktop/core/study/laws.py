"""The laws of mal_method.md §8, each judged from the study's own measurements.

Every ``law*`` function takes the measured records (curves annotated with their models'
family, width, data, seed and configuration; see ``study.py``) and returns a plain dict: the
claim, what was measured, descriptive numbers (means with 95% intervals), and one or more
checks, each a stated test against a stated noise baseline (``stats.py``), whose verdicts give
the law's. Law 4's two halves are separate laws ("4a", "4b"). Nothing here looks at anything
but those numbers, so the report cannot claim more than was measured.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations
from typing import Any, Iterable, Sequence

from . import stats
from .stats import avg, mean_ci

Record = dict[str, Any]
THRESHOLD_SHARE = 0.8  # "almost every pair": tested as more than this share


def ok(records: Iterable[Record | None]) -> list[Record]:
    """The measured records (errors and missing ones left out)."""
    return [r for r in records if r is not None and "error" not in r]


def is_heterogeneous(r: Record) -> bool:
    """A layer-level merge between different families or widths."""
    return r["kind"] == "layer" and (r["base_family"] != r["target_family"]
                                     or r["base_width"] != r["target_width"]
                                     or r["base_width"] is None)


def same_data(r: Record) -> bool:
    return r["target_dataset"] == r["base_dataset"]


def loss(r: Record, series: str = "aligned") -> float:
    return r[series]["mean_lmc_loss"]


def lam(r: Record, series: str = "aligned") -> float:
    return r[series]["threshold"]


def _law(law: str, title: str, measured: str, checks: list[dict], **numbers: Any) -> Record:
    return {"law": law, "title": title, "measured": measured, "checks": checks,
            "verdict": stats.combine(checks), **numbers}


def law1(curves: dict[str, Record], step: float) -> Record:
    """Aligned merging: lower mean LMC loss and larger lambda* than naive index merging."""
    recs = [r for r in ok(curves.values()) if same_data(r)]
    groups = {"whole-model, same family": [r for r in recs if r["kind"] == "whole"],
              "layer-level, heterogeneous": [r for r in recs if is_heterogeneous(r)]}
    checks, numbers = [], {}
    for g, rs in groups.items():
        configs = [r["config"] for r in rs]
        checks.append(stats.paired_check(
            f"{g}: loss", "the aligned merge has a lower mean LMC loss than the naive one",
            [loss(r, "naive") - loss(r) for r in rs], configs, +1,
            "naive minus aligned mean LMC loss of one pair"))
        checks.append(stats.paired_check(
            f"{g}: lambda*", "the aligned merge has a larger lambda* than the naive one",
            [lam(r) - lam(r, "naive") for r in rs], configs, +1,
            "aligned minus naive lambda* of one pair", resolution=step))
        rep = [r for r in rs if "aligned_repair" in r]
        numbers[g] = {
            "n": len(rs), "loss_naive": mean_ci([loss(r, "naive") for r in rs]),
            "loss_aligned": mean_ci([loss(r) for r in rs]),
            "lambda_naive": mean_ci([lam(r, "naive") for r in rs]),
            "lambda_aligned": mean_ci([lam(r) for r in rs]),
            "barrier_aligned": mean_ci([r["aligned"]["barrier"] for r in rs]),
            "repair_n": len(rep),
            "barrier_aligned_bn": mean_ci([r["aligned"]["barrier"] for r in rep]),
            "barrier_repair": mean_ci([r["aligned_repair"]["barrier"] for r in rep]),
            "loss_repair": mean_ci([loss(r, "aligned_repair") for r in rep]),
            "lambda_repair": mean_ci([lam(r, "aligned_repair") for r in rep])}
    restarts = [[x["mean_lmc_loss"] for x in r["matching"]["restarts"]]
                for r in groups["whole-model, same family"] if "matching" in r]
    spread = [max(x) - min(x) for x in restarts if len(x) > 1]
    return _law("1", "Aligned merging beats naive index merging",
                "interpolation curves of whole-model merges of same-family pairs (different "
                "seeds) and of heterogeneous layer-level merges (different family or width), "
                "targets trained on the same data, each with the naive (index-aligned, "
                "zero-padded or truncated) and the aligned merge", checks, groups=numbers,
                matching_restart_spread=mean_ci(spread))


def law2(curves: dict[str, Record], step: float) -> Record:
    """lambda* < 1 for almost every heterogeneous pair, and it depends on the pair."""
    recs = [r for r in ok(curves.values()) if is_heterogeneous(r)]
    by_config: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        by_config[r["config"]].append(lam(r))
    always = [all(x < 1.0 for x in v) for v in by_config.values()]
    checks = [
        stats.share_check("threshold exists (share above 80%)",
                          f"for more than {THRESHOLD_SHARE:.0%} of the pair configurations, "
                          "lambda* < 1 on every seed (a threshold exists beyond seed noise)",
                          always, THRESHOLD_SHARE,
                          "one pair configuration (all its seeds agree on lambda* < 1)"),
        stats.group_check("depends on the pair",
                          "lambda* differs between pair configurations more than between "
                          "seeds of the same configuration",
                          [lam(r) for r in recs], [r["config"] for r in recs],
                          "the seeds of one pair configuration")]
    lams = [lam(r) for r in recs]
    return _law("2", "A merging threshold lambda* < 1 exists and depends on the pair",
                "aligned lambda* of every heterogeneous layer-level merge in the study "
                "(heatmap heads, width ratios, width cases, layer positions)", checks,
                n=len(lams), configurations=len(by_config),
                below_one=sum(x < 1.0 for x in lams), lambda_=mean_ci(lams),
                min=min(lams) if lams else math.nan, max=max(lams) if lams else math.nan,
                configurations_always_below=sum(always))


def data_pairs(curves: dict[str, Record], whole_rows: Sequence[dict],
               heat_rows: Sequence[dict]) -> dict[str, list[tuple[Record, Record]]]:
    """(same-data curve, different-data curve) pairs that differ only in the target's data:
    whole-model pairs and head merges."""
    out: dict[str, list[tuple[Record, Record]]] = {"whole-model": [], "head (layer-level)": []}
    for row in whole_rows:
        s, d = curves.get(row["same_key"]), curves.get(row["key"])
        if row["key"] != row["same_key"] and ok([s]) and ok([d]):
            out["whole-model"].append((s, d))
    for row in heat_rows:
        s, d = curves.get(row["same"] or ""), curves.get(row["different"] or "")
        if ok([s]) and ok([d]):
            out["head (layer-level)"].append((s, d))
    return out


def law3(curves: dict[str, Record], whole_rows: Sequence[dict],
         heat_rows: Sequence[dict]) -> Record:
    """Zoo models trained on the same data merge better than those trained on different data."""
    checks, numbers = [], {}
    for g, ps in data_pairs(curves, whole_rows, heat_rows).items():
        checks.append(stats.paired_check(
            g, "the same-data target gives a lower aligned mean LMC loss than its "
               "different-data twin", [loss(d) - loss(s) for s, d in ps],
            [d["config"] for _, d in ps], +1,
            "different-data minus same-data aligned mean LMC loss (same base, layers, target "
            "architecture and seed)"))
        numbers[g] = {"n": len(ps), "loss_same": mean_ci([loss(s) for s, _ in ps]),
                      "loss_different": mean_ci([loss(d) for _, d in ps]),
                      "lambda_same": mean_ci([lam(s) for s, _ in ps]),
                      "lambda_different": mean_ci([lam(d) for _, d in ps])}
    return _law("3", "Same-data zoo models merge better than different-data ones",
                "pairs of curves that differ only in the target's training data (same base, "
                "layers, target architecture and seed): the target trained on the base's data "
                "vs its twin trained on permuted, rotated or inverted digits", checks,
                groups=numbers)


def _ratio_curves(curves: dict[str, Record], rows: Sequence[dict]) -> list[tuple[dict, Record]]:
    return [(row, curves[row["key"]]) for row in rows if ok([curves.get(row["key"])])]


def law4a(curves: dict[str, Record], ratio_rows: Sequence[dict], step: float) -> Record:
    """A larger width mismatch lowers lambda*."""
    found = _ratio_curves(curves, ratio_rows)
    by_base: dict[tuple, dict[float, Record]] = defaultdict(dict)
    levels: dict[float, list[float]] = defaultdict(list)
    for row, r in found:
        mismatch = round(abs(math.log2(row["target_width"] / row["base_width"])), 6)
        by_base[(row["family"], row["replicate"], row["base_width"])][mismatch] = r
        levels[mismatch].append(lam(r))
    diffs, configs = [], []
    top = max(levels) if levels else 0.0
    for (family, _, width), at in by_base.items():
        if 0.0 in at and top in at and top > 0:
            diffs.append(lam(at[top]) - lam(at[0.0]))
            configs.append(f"{family}|w{width}")
    check = stats.paired_check(
        "largest vs no mismatch", "lambda* at the largest width mismatch is below lambda* of "
        "the same base with a target of its own width", diffs, configs, -1,
        f"one base: lambda* with a target at |log2 ratio| = {top:g} minus with an "
        "equal-width target", resolution=step)
    pts = [(m, x) for m, xs in levels.items() for x in xs]
    return _law("4a", "A larger width mismatch lowers lambda*",
                "within each family, every base width merges the middle layer of the partner "
                "seed's models of every width (width ratio target/base from 1/4 to 4)",
                [check], by_mismatch={str(m): mean_ci(levels[m]) for m in sorted(levels)},
                spearman=stats_spearman([m for m, _ in pts], [x for _, x in pts]))


def stats_spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"rho": math.nan, "p": math.nan, "n": len(x)}
    res = spearmanr(x, y)
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(x)}


_MIRROR = {("narrower", "narrower"): ("wider", "wider"),
           ("narrower", "equal"): ("wider", "equal"),
           ("equal", "narrower"): ("equal", "wider")}


def law4b(curves: dict[str, Record], ratio_rows: Sequence[dict],
          case_rows: Sequence[dict], step: float) -> Record:
    """A wider target hurts less than a narrower one (same base, same size of mismatch)."""
    diffs, configs, sources = [], [], []
    by_base: dict[tuple, dict[int, Record]] = defaultdict(dict)
    for row, r in _ratio_curves(curves, ratio_rows):
        by_base[(row["family"], row["replicate"], row["base_width"])][row["target_width"]] = r
    for (family, _, w), at in by_base.items():
        for t in at:
            if t > w and (w * w) / t in at:  # same |log2 ratio| on the other side
                diffs.append(lam(at[t]) - lam(at[(w * w) / t]))
                configs.append(f"{family}|w{w}|x{t // w}")
                sources.append("width ratios")
    cases: dict[tuple, dict[tuple, Record]] = defaultdict(dict)
    for row in case_rows:
        if ok([curves.get(row["key"])]):
            cases[row["replicate"]][(row["out"], row["in"])] = curves[row["key"]]
    for at in cases.values():
        for wide_t, narrow_t in _MIRROR.items():  # base narrower = target wider
            if wide_t in at and narrow_t in at:
                diffs.append(lam(at[wide_t]) - lam(at[narrow_t]))
                configs.append(f"mlp case {wide_t}")
                sources.append("nine cases")
    check = stats.paired_check(
        "wider vs narrower target", "a target wider than the base gives a larger lambda* "
        "than a target narrower by the same factor", diffs, configs, +1,
        "one base: lambda* with the wider target minus with the narrower one",
        resolution=step)
    by_source = {src: mean_ci([d for d, s in zip(diffs, sources) if s == src])
                 for src in ("width ratios", "nine cases")}
    width_cases = []
    for row in case_rows:
        r = curves.get(row["key"])
        if ok([r]):
            width_cases.append({**row, "lambda": lam(r), "mean_loss": loss(r),
                                "naive_lambda": lam(r, "naive"),
                                "naive_mean_loss": loss(r, "naive")})
    return _law("4b", "A wider target hurts less than a narrower one",
                "pairs of merges into the same base whose targets are wider and narrower by "
                "the same factor: the middle layer of the middle width with the widest and "
                "narrowest targets of its family, and the mirrored MLP width cases",
                [check], by_source=by_source, width_cases=width_cases)


def law5(curves: dict[str, Record], rows: Sequence[dict]) -> Record:
    """Layer position matters: position effects beyond target-to-target variation."""
    table: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        r = curves.get(row["key"])
        if ok([r]):
            table[(row["family"], row["replicate"])][row["target_role"]][row["position"]] = loss(r)
    diffs, configs, families = [], [], defaultdict(lambda: {"pos": [], "tgt": []})
    for (family, _), by_target in table.items():
        positions = sorted({p for v in by_target.values() for p in v})
        d_pos = avg([abs(v[a] - v[b]) for v in by_target.values()
                     for a, b in combinations(positions, 2) if a in v and b in v])
        d_tgt = avg([abs(by_target[s][p] - by_target[t][p]) for p in positions
                     for s, t in combinations(sorted(by_target), 2)
                     if p in by_target[s] and p in by_target[t]])
        if math.isfinite(d_pos) and math.isfinite(d_tgt):
            diffs.append(d_pos - d_tgt)
            configs.append(family)
            families[family]["pos"].append(d_pos)
            families[family]["tgt"].append(d_tgt)
    per_position: dict[str, dict[str, Any]] = {}
    for row in rows:
        r = curves.get(row["key"])
        if ok([r]):
            per_position.setdefault(row["family"], {}).setdefault(
                row["position"], {"layer": row["layer"], "loss": [], "lambda": []})
            cell = per_position[row["family"]][row["position"]]
            cell["loss"].append(loss(r))
            cell["lambda"].append(lam(r))
    summary = {fam: {"positions": {p: {"layer": c["layer"], "mean_loss": mean_ci(c["loss"]),
                                       "lambda": mean_ci(c["lambda"])}
                                   for p, c in pos.items()},
                     "position_difference": mean_ci(families[fam]["pos"]),
                     "target_difference": mean_ci(families[fam]["tgt"])}
               for fam, pos in per_position.items()}
    check = stats.paired_check(
        "position vs target", "merging the first, middle or last layer changes the aligned "
        "mean LMC loss more than changing the target at the same position",
        diffs, configs, +1, "one base (family and seed): mean |loss difference| between "
        "positions (same target) minus mean |loss difference| between targets (same position)")
    return _law("5", "Layer position matters",
                "each family's base merges only its first, only its middle or only its last "
                "(head) layer from several targets: the same-width model of both partner seeds "
                "and the widest model of its family", [check], families=summary)


def law6(iterated: Sequence[Record], epsilon: float) -> Record:
    """Iterated steps, each under its own threshold, accumulate degradation."""
    diffs, configs, chains = [], [], []
    for it in iterated:
        if "error" in it or not it.get("single_accuracy"):
            continue
        acc = it["accuracy"]
        drop_last = acc[0] - acc[-1]
        worst_single = max(acc[0] - a for a in it["single_accuracy"])
        diffs.append(drop_last - worst_single)
        configs.append(it["family"])
        chains.append({"family": it["family"], "replicate": it["replicate"],
                       "steps": len(acc) - 1, "lams": it["lams"], "layer": it["layer"],
                       "base_accuracy": acc[0], "after_first": acc[1], "after_last": acc[-1],
                       "worst_single_drop": worst_single, "drop_last": drop_last,
                       "each_step_alone_within_epsilon": worst_single <= epsilon + 1e-12})
    check = stats.paired_check(
        "accumulation", "after all steps the base-task accuracy has dropped more than after "
        "the worst single step applied alone", diffs, configs, +1,
        "one chain (family and seed): accuracy drop after the last step minus the largest "
        "drop of one step alone (accuracy, fraction)")
    return _law("6", "Iterated steps, each under its own threshold, accumulate degradation",
                "each family's base takes its middle layer from the family's other models in "
                "turn, each step at half that donor's own measured lambda* (so each step alone "
                "stays within epsilon), each aligned to the current merged base; accuracy after "
                "each step, and each step applied alone to the fresh base", [check],
                chains=chains, epsilon=epsilon)
