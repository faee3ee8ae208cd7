"""The per-law sections of the study's ``report.md``: what was measured, the checks (test, n,
interval, p, noise baseline, verdict), descriptive numbers and the law's figure."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from .format import check_rows, f, fp, figure, mci, pct, table
from .stats import mean_ci

Law = dict[str, Any]


def _head(law: Law) -> list[str]:
    return [f"Measured: {law['measured']}.", "", "Checks:", ""] + check_rows(law["checks"]) + [""]


def _verdict(law: Law) -> list[str]:
    verdicts = [c["verdict"] for c in law["checks"]]
    held = sum(v == "held" for v in verdicts)
    return [f"**Verdict: {law['verdict']}** ({held} of {len(verdicts)} checks held).", ""]


def _law1(law: Law, data: dict[str, Any], step: float) -> list[str]:
    rows = [[g, v["n"], mci(v["loss_naive"]), mci(v["loss_aligned"]),
             mci(v["lambda_naive"], ".2f"), mci(v["lambda_aligned"], ".2f"),
             mci(v["barrier_aligned"]),
             f"{mci(v['barrier_aligned_bn'])} -> {mci(v['barrier_repair'])} (n={v['repair_n']})"
             if v["repair_n"] else "-",
             mci(v["lambda_repair"], ".2f") if v["repair_n"] else "-"]
            for g, v in law["groups"].items()]
    lines = _head(law) + table(
        ["pairs", "n", "mean loss naive", "mean loss aligned", "lambda* naive",
         "lambda* aligned", "aligned barrier", "BatchNorm bases: aligned barrier -> with REPAIR",
         "lambda* with REPAIR"], rows) + [""]
    spread = law.get("matching_restart_spread")
    if spread and spread["n"]:
        lines += [f"Whole-model weight matching restarted from several seeds lands in different "
                  f"optima: the aligned mean LMC loss of one pair varies by {mci(spread)} "
                  f"(max - min over restarts, mean over {spread['n']} pairs); the study keeps "
                  "the restart with the highest matching objective.", ""]
    return lines + _verdict(law) + figure("naive_aligned")


def _law2(law: Law, data: dict[str, Any], step: float) -> list[str]:
    lines = _head(law)
    if law["n"]:
        lines += [f"{law['below_one']} of {law['n']} heterogeneous merges have lambda* < 1; "
                  f"{law['configurations_always_below']} of {law['configurations']} pair "
                  f"configurations on every seed. lambda* averages {mci(law['lambda_'], '.2f')} "
                  f"and ranges from {f(law['min'], '.2f')} to {f(law['max'], '.2f')}.", ""]
    return lines + _verdict(law) + figure("width_ratio")


def _law3(law: Law, data: dict[str, Any], step: float) -> list[str]:
    rows = [[g, v["n"], mci(v["loss_same"]), mci(v["loss_different"]),
             mci(v["lambda_same"], ".2f"), mci(v["lambda_different"], ".2f")]
            for g, v in law["groups"].items()]
    lines = _head(law) + table(["merge", "pairs", "mean loss same data",
                                "mean loss different data", "lambda* same",
                                "lambda* different"], rows) + [""]
    return lines + _verdict(law) + figure("heatmap_same") + figure("heatmap_different")


def _law4a(law: Law, data: dict[str, Any], step: float) -> list[str]:
    rows = [[lv, v["n"], mci(v, ".2f")] for lv, v in law["by_mismatch"].items()]
    s = law["spearman"]
    lines = _head(law) + table(["|log2 ratio|", "merges", "mean lambda* [95% CI]"], rows)
    lines += ["", f"Spearman correlation of mismatch and lambda* over all {s['n']} merges: "
                  f"{f(s['rho'], '.2f')} (p = {fp(s['p'], '.3g')}).", ""]
    return lines + _verdict(law) + figure("width_ratio")


def _law4b(law: Law, data: dict[str, Any], step: float) -> list[str]:
    lines = _head(law)
    split = [f"{src}: {mci(v, '.3g')} (n = {v['n']})" for src, v in law["by_source"].items()]
    lines += [f"Mean difference (wider minus narrower target) by source: {'; '.join(split)}.",
              ""]
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in law["width_cases"]:
        cell = cells[(c["out"], c["in"], c["target_out"], c["target_in"])]
        for k in ("naive_lambda", "lambda", "naive_mean_loss", "mean_loss"):
            cell[k].append(c[k])
    if cells:
        lines += ["The nine width cases (base side relative to the target; means over "
                  f"{max(len(v['lambda']) for v in cells.values())} seeds with 95% intervals):",
                  ""]
        lines += table(["out", "in", "target out x in", "lambda* naive", "lambda* aligned",
                        "loss naive", "loss aligned"],
                       [[o, i, f"{to} x {ti}", mci(mean_ci(v["naive_lambda"]), ".2f"),
                         mci(mean_ci(v["lambda"]), ".2f"), mci(mean_ci(v["naive_mean_loss"])),
                         mci(mean_ci(v["mean_loss"]))] for (o, i, to, ti), v in cells.items()])
        lines.append("")
    return lines + _verdict(law) + figure("width_cases")


def _law5(law: Law, data: dict[str, Any], step: float) -> list[str]:
    rows = []
    for family, v in law["families"].items():
        pos = v["positions"]
        rows.append([family] + [f"{mci(pos[p]['mean_loss'])} / {mci(pos[p]['lambda'], '.2f')}"
                                if p in pos else "-" for p in ("first", "middle", "last")]
                    + [mci(v["position_difference"]), mci(v["target_difference"])])
    lines = _head(law) + table(["family", "first (loss / lambda*)", "middle", "last",
                                "between positions", "between targets"], rows)
    lines += ["", "Between positions: mean |difference| of the aligned mean LMC loss between two "
                  "positions, same target; between targets: the same between two targets at "
                  "one position (the noise a position effect must beat).", ""]
    return lines + _verdict(law) + figure("positions")


def _law6(law: Law, data: dict[str, Any], step: float) -> list[str]:
    rows = [[c["family"], c["replicate"], c["steps"], ", ".join(f"{x:.3g}" for x in c["lams"]),
             c["layer"], pct(c["base_accuracy"]), pct(c["after_first"]), pct(c["after_last"]),
             f(c["worst_single_drop"] * 100, ".1f"), f(c["drop_last"] * 100, ".1f"),
             "yes" if c["each_step_alone_within_epsilon"] else "no"] for c in law["chains"]]
    lines = _head(law) + table(["family", "seed", "steps", "lambdas", "layer", "base acc",
                                "after step 1", "after last step", "worst single drop (pts)",
                                "drop after all steps (pts)", "each step alone within epsilon"],
                               rows)
    return lines + [""] + _verdict(law) + figure("iterated")


SECTIONS: dict[str, Callable[[Law, dict[str, Any], float], list[str]]] = {
    "1": _law1, "2": _law2, "3": _law3, "4a": _law4a, "4b": _law4b, "5": _law5, "6": _law6}


def heatmap_table(data: dict[str, Any], which: str) -> list[str]:
    """Mean aligned LMC loss per (base family, target family) cell over the seeds, with its
    95% interval."""
    fams = data["heatmaps"]["families"]
    curves = {r["key"]: r for r in data["curves"] if "error" not in r}
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in data["parts"]["heatmaps"]:
        r = curves.get(row[which] or "")
        if r is not None:
            cells[(row["base_family"], row["target_family"])].append(
                r["aligned"]["mean_lmc_loss"])
    rows = [[a] + [mci(mean_ci(cells.get((a, b), []))) for b in fams] for a in fams]
    return table(["base \\ target"] + fams, rows)
