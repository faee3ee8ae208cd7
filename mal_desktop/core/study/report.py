"""The study's ``report.md``: per law, what was measured, the numbers, and the computed verdict.

Every sentence with a number or a verdict is formatted from the study data (``study.json``);
nothing is written by hand, so a law that fails is reported as failing.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

# Figure key -> (file name, caption). mal_desktop/figures.py renders exactly these files.
FIGURES: dict[str, tuple[str, str]] = {
    "heatmap_same": ("heatmap_same_data.png",
                     "Mean LMC loss (aligned) of merging a target's head into each family's "
                     "base; rows: base family, columns: target family; targets trained on the "
                     "same data."),
    "heatmap_different": ("heatmap_different_data.png",
                          "As above, with targets trained on different data (digits rotated "
                          "90 degrees)."),
    "width_cases": ("width_cases.png",
                    "The nine width cases: aligned mean LMC loss (colour) and lambda* (text) of "
                    "merging an MLP's middle layer; rows: the base's output side, columns: its "
                    "input side, relative to the target."),
    "positions": ("layer_position.png",
                  "Aligned mean LMC loss of merging only the first, middle or last layer, per "
                  "family."),
    "width_ratio": ("width_ratio_lambda.png",
                    "Width ratio (target / base, log scale) vs aligned lambda* of merging the "
                    "middle layer, per family."),
    "iterated": ("iterated_steps.png",
                 "Base-task accuracy after each iterated small-lambda step, per family."),
    "naive_aligned": ("naive_vs_aligned.png",
                      "Loss along lambda for whole-model merges of same-family pairs: naive "
                      "(dashed) vs aligned by weight matching (solid)."),
}


def f(x: Any, spec: str = ".3f") -> str:
    """A number for the report; '-' for missing or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if spec == "%":
        return f"{x:.1%}"
    return format(x, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _figure(key: str) -> list[str]:
    name, caption = FIGURES[key]
    return [f"![{caption}]({name})", "", f"*Figure: {caption}*", ""]


def _verdict(law: dict[str, Any]) -> list[str]:
    checks = law["checks"]
    passed = sum(bool(c) for c in checks)
    return [f"**Verdict: {law['verdict']}** ({passed} of {len(checks)} checks passed).", ""]


def _resolution_note(a: Any, b: Any, step: float, what: str) -> list[str]:
    """A caution when two mean lambda* differ by less than one grid step."""
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or \
            (isinstance(b, float) and math.isnan(b)) or abs(a - b) >= step:
        return []
    return [f"Note: {what} differ by {abs(a - b):.3f}, less than one grid step ({step:g}): "
            "this check is within the grid's resolution and can flip with small training "
            "differences.", ""]


def _law1(law: dict[str, Any], step: float) -> list[str]:
    lines = ["Measured: interpolation curves of whole-model merges of same-family pairs "
             "(different seeds) and of heterogeneous layer-level merges (different family or "
             "width), each with the naive (index-aligned, zero-padded or truncated) and the "
             "aligned merge.", "", f"Criterion: {law['criterion']}.", ""]
    rows = [[g, v["n"], f(v["mean_loss_naive"]), f(v["mean_loss_aligned"]),
             f"{v['aligned_lower_loss']}/{v['n']}", f(v["lambda_naive"], ".2f"),
             f(v["lambda_aligned"], ".2f"), f"{v['aligned_larger_lambda']}/{v['n']}"]
            for g, v in law["groups"].items()]
    lines += _table(["pairs", "n", "mean loss naive", "mean loss aligned", "aligned lower",
                     "mean lambda* naive", "mean lambda* aligned", "aligned larger lambda*"],
                    rows)
    lines.append("")
    for g, v in law["groups"].items():
        lines += _resolution_note(v["lambda_naive"], v["lambda_aligned"], step,
                                  f"the naive and aligned mean lambda* of the {g} group")
    return lines + _verdict(law) + _figure("naive_aligned")


def _law2(law: dict[str, Any], step: float) -> list[str]:
    lines = ["Measured: aligned lambda* of every heterogeneous layer-level merge in the study "
             "(heatmap heads, width ratios, width cases, layer positions).", "",
             f"Criterion: {law['criterion']}.", ""]
    if law["n"]:
        lines += [f"{law['below_one']} of {law['n']} heterogeneous pairs "
                  f"({f(law['fraction_below_one'], '%')}) have lambda* < 1; lambda* ranges from "
                  f"{f(law['min'], '.2f')} to {f(law['max'], '.2f')} (median "
                  f"{f(law['median'], '.2f')}) over {len(law['distinct_values'])} distinct "
                  "values.", ""]
    return lines + _verdict(law) + _figure("width_ratio")


def _law3(law: dict[str, Any], step: float) -> list[str]:
    lines = ["Measured: pairs of curves that differ only in the target's training data (same "
             "base, layers, target architecture and seed): the target trained on the base's "
             "data vs on a different data set. For whole-model pairs the merged model is also "
             "evaluated on the target's own task (target-task accuracy at lambda*).", "",
             f"Criterion: {law['criterion']}.", ""]
    rows = [[g, v["n"], f(v["mean_loss_same"]), f(v["mean_loss_different"]),
             f"{v['same_data_better']}/{v['n']}", f(v["lambda_same"], ".2f"),
             f(v["lambda_different"], ".2f")] for g, v in law["groups"].items()]
    lines += _table(["merge", "pairs", "mean loss same data", "mean loss different data",
                     "same data better", "lambda* same", "lambda* different"], rows)
    whole = [p for p in law["pairs"] if not p["layers"]]
    if whole:
        lines += ["", "Whole-model pairs:", ""]
        lines += _table(["base", "same-data target", "different-data target", "its data",
                         "loss same", "loss different", "target-task accuracy at lambda*"],
                        [[p["base"], p["same_target"], p["different_target"],
                          p["different_dataset"], f(p["loss_same"]), f(p["loss_different"]),
                          f(p["target_task_accuracy"], "%")] for p in whole])
    return lines + [""] + _verdict(law) + _figure("heatmap_same") + _figure("heatmap_different")


def _law4(law: dict[str, Any], step: float) -> list[str]:
    lines = ["Measured: within each family, every base width merges the middle layer of the "
             "family's other models (width ratio target/base from 1/4 to 4), and the nine "
             "width cases of an MLP middle layer.", "", f"Criterion: {law['criterion']}.", ""]
    rows = [[lv, v["n"], f(v["lambda"], ".2f"), f(v["mean_loss"])]
            for lv, v in law["by_mismatch"].items()]
    lines += _table(["|log2 ratio|", "pairs", "mean lambda*", "mean LMC loss"], rows)
    w, n = law["wider_target"], law["narrower_target"]
    lines += ["", f"Spearman correlation of mismatch and lambda*: "
                  f"{f(law['spearman_mismatch_lambda'], '.2f')}. Wider target: {w['n']} merges, "
                  f"mean lambda* {f(w['lambda'], '.2f')}, mean loss {f(w['mean_loss'])}; narrower "
                  f"target: {n['n']} merges, mean lambda* {f(n['lambda'], '.2f')}, mean loss "
                  f"{f(n['mean_loss'])}."]
    split = [f"{src}: wider {f(v['wider']['lambda'], '.2f')} (n={v['wider']['n']}) vs narrower "
             f"{f(v['narrower']['lambda'], '.2f')} (n={v['narrower']['n']})"
             for src, v in law["direction_by_source"].items()]
    lines += [f"Mean lambda* by source: {'; '.join(split)}.", ""]
    lines += _resolution_note(w["lambda"], n["lambda"], step,
                              "the mean lambda* of wider and narrower targets")
    if law["width_cases"]:
        lines += ["The nine width cases (base side relative to the target):", ""]
        lines += _table(["out", "in", "target out x in", "lambda* naive", "lambda* aligned",
                         "loss naive", "loss aligned"],
                        [[c["out"], c["in"], f"{c['target_out']} x {c['target_in']}",
                          f(c["naive_lambda"], ".2f"), f(c["lambda"], ".2f"),
                          f(c["naive_mean_loss"]), f(c["mean_loss"])]
                         for c in law["width_cases"]])
        lines.append("")
    return lines + _verdict(law) + _figure("width_cases") + _figure("width_ratio")


def _law5(law: dict[str, Any], step: float) -> list[str]:
    lines = ["Measured: each family's base merges only its first, only its middle or only its "
             "last (head) layer from the same-width second seed and from the widest other "
             "model of its family.", "", f"Criterion: {law['criterion']}.", ""]
    rows = []
    for family, v in law["families"].items():
        pos = v["positions"]
        rows.append([family] + [f"{f(pos[p]['mean_loss'])} / {f(pos[p]['lambda'], '.2f')}"
                                if p in pos else "-" for p in ("first", "middle", "last")]
                    + [f(v["relative_spread"], "%"), v["worst_position"],
                       "yes" if v["matters"] else "no"])
    lines += _table(["family", "first (loss / lambda*)", "middle", "last", "relative spread",
                     "worst", "matters"], rows)
    return lines + [""] + _verdict(law) + _figure("positions")


def _law6(law: dict[str, Any], step: float) -> list[str]:
    lines = ["Measured: each family's base takes its middle layer from the family's other "
             "models in turn, one aligned step after another at a small lambda; accuracy "
             "after each step, and each step applied alone to the fresh base.", "",
             f"Criterion: {law['criterion']}.", ""]
    rows = [[fam, v["steps"], f(v["lam"], ".2f"), v["layer"], f(v["base_accuracy"], "%"),
             f(v["after_first"], "%"), f(v["after_last"], "%"),
             "yes" if v["each_step_alone_within_epsilon"] else "no",
             "yes" if v["accumulates"] else "no"] for fam, v in law["families"].items()]
    lines += _table(["family", "steps", "lambda", "layer", "base acc", "after step 1",
                     "after last step", "each step alone within epsilon", "accumulates"], rows)
    return lines + [""] + _verdict(law) + _figure("iterated")


_SECTIONS = {1: _law1, 2: _law2, 3: _law3, 4: _law4, 5: _law5, 6: _law6}


def _heatmap_table(heat: dict[str, Any], which: str) -> list[str]:
    fams = heat["families"]
    rows = [[a] + [f(v) for v in heat[which][i]] for i, a in enumerate(fams)]
    return _table(["base \\ target"] + fams, rows)


def render_report(data: dict[str, Any]) -> str:
    """The whole report.md text from the study data."""
    t = data["timing"]
    zoo = data["zoo"]
    step = data["lambdas"][1] - data["lambdas"][0]
    lines = ["# The laws of Model Assembly Learning, measured on the demo zoo", "",
             f"Generated by `mal study`{' --small' if data['small'] else ''} "
             f"(mal_desktop {data['version']}) on {data['created_at']}. Zoo: {len(zoo['models'])} "
             f"models of {len(zoo['families'])} families ({', '.join(zoo['families'])}); "
             f"evaluation on the {data['dataset']} test split; lambda grid of "
             f"{len(data['lambdas'])} points; epsilon {f(data['epsilon'], '%')} for lambda*.", "",
             f"Run time on {data['device']}: zoo {t['zoo_seconds']:.1f} s "
             f"({t['zoo_trained']} models trained, {t['zoo_reused']} reused), "
             f"{t['curves']} curves {t['curve_seconds']:.1f} s, iterated merges "
             f"{t['iterated_seconds']:.1f} s; total {t['total_seconds']:.1f} s.", "",
             "Verdicts are computed from the numbers below by the stated criteria: "
             "**held** (every check passed), **partly held** (some), **did not hold** (none), "
             "**not measured** (the zoo lacks the models).", "", "## Summary", ""]
    lines += _table(["law", "statement", "verdict"],
                    [[law["law"], law["title"], f"**{law['verdict']}**"]
                     for law in data["laws"]])
    lines.append("")
    for law in data["laws"]:
        lines += [f"## Law {law['law']}: {law['title']}", ""]
        lines += _SECTIONS[law["law"]](law, step)
    lines += ["## Architecture x architecture heatmaps", "",
              "Mean LMC loss (aligned) of merging a target's head into each family's base "
              "(mean over the targets of a cell).", "", "Same data:", ""]
    lines += _heatmap_table(data["heatmaps"], "same")
    lines += ["", "Different data:", ""]
    lines += _heatmap_table(data["heatmaps"], "different")
    lines += ["", "## Method", ""] + [f"- {m}" for m in data["method"]]
    errors = [r for r in data["curves"] if "error" in r]
    if errors:
        lines += ["", "## Measurements that failed", ""]
        lines += [f"- {r['key']}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"
