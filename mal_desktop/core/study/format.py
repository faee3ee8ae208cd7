"""Formatting helpers of the study's markdown (numbers, intervals, tables, figures, checks)."""

from __future__ import annotations

import math
from typing import Any, Sequence

# Figure key -> (file name, caption). mal_desktop/figures.py renders exactly these files.
FIGURES: dict[str, tuple[str, str]] = {
    "heatmap_same": ("heatmap_same_data.png",
                     "Mean LMC loss (aligned, mean over seeds) of merging a target's head into "
                     "each family's base; rows: base family, columns: target family; targets "
                     "trained on the same data."),
    "heatmap_different": ("heatmap_different_data.png",
                          "As above, with targets trained on different data (digits rotated "
                          "90 degrees)."),
    "width_cases": ("width_cases.png",
                    "The nine width cases: aligned mean LMC loss (colour) and lambda* (text), "
                    "means over seeds, of merging an MLP's middle layer; rows: the base's output "
                    "side, columns: its input side, relative to the target."),
    "positions": ("layer_position.png",
                  "Aligned mean LMC loss of merging only the first, middle or last layer, per "
                  "family (mean over seeds and targets; bars: 95% interval)."),
    "width_ratio": ("width_ratio_lambda.png",
                    "Width ratio (target / base, log scale) vs aligned lambda* of merging the "
                    "middle layer, per family (one point per seed; lines: family means)."),
    "iterated": ("iterated_steps.png",
                 "Base-task accuracy after each iterated step, each step at half its own "
                 "lambda*, per family and seed."),
    "naive_aligned": ("naive_vs_aligned.png",
                      "Loss along lambda for whole-model merges of same-family pairs: naive "
                      "(dashed) vs aligned by weight matching (solid), one line per seed."),
}



def f(x: Any, spec: str = ".3f") -> str:
    """A number for the report; '-' for missing or NaN; rounding noise (|x| < 1e-12) is 0."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and abs(x) < 1e-12:
        x = 0.0
    return format(x, spec)


def fp(p: Any, spec: str = ".3g") -> str:
    """A p-value for the report: '-' when missing; never rounded to 0 (a p of 1.5e-29 is a
    result, not rounding noise)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return format(p, spec)


def pct(x: Any) -> str:
    """A fraction as a percentage with one decimal; '-' for missing or NaN."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def ci_text(mean: Any, ci: Sequence[Any], spec: str = ".3f") -> str:
    """'mean [lo, hi]'."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{f(mean, spec)} [{f(ci[0], spec)}, {f(ci[1], spec)}]"


def mci(x: dict[str, Any] | None, spec: str = ".3f", scale: float = 1.0) -> str:
    """A mean_ci dict as 'mean [lo, hi]' (times ``scale``)."""
    if not x or x.get("n", 0) == 0:
        return "-"
    return ci_text(x["mean"] * scale, [c * scale for c in x["ci"]], spec)


def _cell(c: Any) -> str:
    return str(c).replace("|", "\\|")  # a pipe inside a cell would split it


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def md(text: str) -> str:
    """``text`` with markdown's emphasis character escaped (lambda* inside italics)."""
    return text.replace("*", "\\*")


def figure(key: str) -> list[str]:
    name, caption = FIGURES[key]
    return [f"![{caption}]({name})", "", f"*Figure: {md(caption)}*", ""]


def check_rows(checks: Sequence[dict[str, Any]]) -> list[str]:
    """The table of a law's checks: claim, test, n, effect, p, noise, verdict and why."""
    rows = [[c["name"], c["claim"], c["test"], c["unit"], c["n"],
             ci_text(c["effect"], c["ci"], ".3g"), fp(c["p"], ".3g"), f(c["noise"], ".3g"),
             f(c["minimum_effect"], ".3g"), f"**{c['verdict']}** ({c['reason']})"]
            for c in checks]
    return table(["check", "claim", "test", "unit", "n", "mean effect [95% CI]", "p",
                  "noise baseline (seed-to-seed SD)", "minimum effect", "verdict"], rows)
