"""The six laws of mal_method.md §8, each judged from the study's own measurements.

Every ``law_*`` function takes the measured records and returns a plain dict: what was measured,
the numbers, the criterion in words, the sub-checks and the verdict computed from them. Nothing
here looks at anything but those numbers, so the report cannot claim more than was measured.

Verdicts: "held" (every check passed), "did not hold" (none passed), "partly held" (some did),
"not measured" (no data, e.g. a tiny zoo without the needed models).
"""

from __future__ import annotations

import math
from statistics import mean, median
from typing import Any, Iterable, Sequence

Record = dict[str, Any]

HELD, PARTLY, NOT_HELD, NOT_MEASURED = "held", "partly held", "did not hold", "not measured"
POSITION_SPREAD = 0.10  # relative spread of mean LMC loss across positions that "matters"


def verdict_of(checks: Sequence[bool]) -> str:
    """held when all checks pass, did not hold when none does, partly held otherwise."""
    if not checks:
        return NOT_MEASURED
    if all(checks):
        return HELD
    return NOT_HELD if not any(checks) else PARTLY


def majority_verdict(flags: Sequence[bool]) -> str:
    """held when more than half pass, did not hold when none does, partly held otherwise."""
    if not flags:
        return NOT_MEASURED
    n = sum(flags)
    return HELD if n > len(flags) / 2 else NOT_HELD if n == 0 else PARTLY


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


def _avg(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return mean(xs) if xs else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    mx, my = mean(rx), mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def _group_naive_aligned(records: list[Record]) -> dict[str, Any]:
    n = len(records)
    lower = sum(r["aligned"]["mean_lmc_loss"] < r["naive"]["mean_lmc_loss"] for r in records)
    larger = sum(r["aligned"]["threshold"] > r["naive"]["threshold"] for r in records)
    smaller = sum(r["aligned"]["threshold"] < r["naive"]["threshold"] for r in records)
    return {"n": n, "aligned_lower_loss": lower, "aligned_larger_lambda": larger,
            "aligned_smaller_lambda": smaller,
            "mean_loss_naive": _avg([r["naive"]["mean_lmc_loss"] for r in records]),
            "mean_loss_aligned": _avg([r["aligned"]["mean_lmc_loss"] for r in records]),
            "lambda_naive": _avg([r["naive"]["threshold"] for r in records]),
            "lambda_aligned": _avg([r["aligned"]["threshold"] for r in records])}


def law1(curves: dict[str, Record]) -> dict[str, Any]:
    """Aligned merging: lower mean LMC loss and larger lambda* than naive index merging."""
    recs = [r for r in ok(curves.values()) if same_data(r)]
    groups = {"whole-model, same family": [r for r in recs if r["kind"] == "whole"],
              "layer-level, heterogeneous": [r for r in recs if is_heterogeneous(r)]}
    numbers = {g: _group_naive_aligned(rs) for g, rs in groups.items() if rs}
    checks = []
    for g in numbers.values():
        checks.append(g["aligned_lower_loss"] > g["n"] / 2)
        checks.append(g["lambda_aligned"] > g["lambda_naive"])
    return {"law": 1, "title": "Aligned merging beats naive index merging",
            "criterion": "in each group (whole-model pairs; heterogeneous layer-level pairs), "
                         "aligned mean LMC loss is lower for more than half of the pairs, and "
                         "the mean lambda* of the aligned merges is larger than the naive one",
            "groups": numbers, "checks": checks, "verdict": verdict_of(checks)}


def law2(curves: dict[str, Record]) -> dict[str, Any]:
    """lambda* < 1 for most heterogeneous pairs, and it depends on the pair."""
    recs = [r for r in ok(curves.values()) if is_heterogeneous(r)]
    lams = [r["aligned"]["threshold"] for r in recs]
    below = sum(x < 1.0 for x in lams)
    distinct = sorted(set(lams))
    checks = [below > len(lams) / 2, len(distinct) > 1] if lams else []
    return {"law": 2, "title": "A merging threshold lambda* < 1 exists and depends on the pair",
            "criterion": "aligned lambda* < 1 for more than half of the heterogeneous "
                         "layer-level pairs, and lambda* takes more than one value",
            "n": len(lams), "below_one": below,
            "fraction_below_one": below / len(lams) if lams else math.nan,
            "distinct_values": distinct,
            "min": min(lams) if lams else math.nan, "median": median(lams) if lams else math.nan,
            "max": max(lams) if lams else math.nan, "checks": checks,
            "verdict": verdict_of(checks)}


def data_pairs(curves: dict[str, Record]) -> list[tuple[Record, Record]]:
    """(same-data curve, different-data curve) pairs that differ only in the target's data:
    same base, same layers, target of the same family, width and seed."""
    recs = ok(curves.values())
    same = [r for r in recs if same_data(r)]
    pairs = []
    for d in recs:
        if same_data(d):
            continue
        for s in same:
            if (s["base"], s["layers"], s["target_family"], s["target_width"],
                    s["target_seed"]) == (d["base"], d["layers"], d["target_family"],
                                          d["target_width"], d["target_seed"]):
                pairs.append((s, d))
                break
    return pairs


def law3(curves: dict[str, Record]) -> dict[str, Any]:
    """Zoo models trained on the same data merge better than those trained on different data."""
    pairs = data_pairs(curves)
    groups: dict[str, Any] = {}
    for kind, label in (("whole", "whole-model"), ("layer", "head (layer-level)")):
        ps = [(s, d) for s, d in pairs if s["kind"] == kind]
        if not ps:
            continue
        better = sum(s["aligned"]["mean_lmc_loss"] < d["aligned"]["mean_lmc_loss"] for s, d in ps)
        groups[label] = {
            "n": len(ps), "same_data_better": better,
            "mean_loss_same": _avg([s["aligned"]["mean_lmc_loss"] for s, _ in ps]),
            "mean_loss_different": _avg([d["aligned"]["mean_lmc_loss"] for _, d in ps]),
            "lambda_same": _avg([s["aligned"]["threshold"] for s, _ in ps]),
            "lambda_different": _avg([d["aligned"]["threshold"] for _, d in ps])}
    rows = [{"base": s["base"], "layers": s["layers"], "same_target": s["target"],
             "different_target": d["target"], "different_dataset": d["target_dataset"],
             "loss_same": s["aligned"]["mean_lmc_loss"],
             "loss_different": d["aligned"]["mean_lmc_loss"],
             "lambda_same": s["aligned"]["threshold"],
             "lambda_different": d["aligned"]["threshold"],
             "target_task_accuracy": d["aligned"].get("target_task_accuracy")}
            for s, d in pairs]
    checks = [g["same_data_better"] > g["n"] / 2 for g in groups.values()]
    return {"law": 3, "title": "Same-data zoo models merge better than different-data ones",
            "criterion": "for more than half of the paired comparisons (same base, layers and "
                         "target architecture and seed; only the target's training data "
                         "differs), the same-data target gives the lower aligned mean LMC loss; "
                         "checked for whole-model and head merges separately",
            "groups": groups, "pairs": rows, "checks": checks, "verdict": verdict_of(checks)}


def _case_direction(case: dict[str, Any]) -> str | None:
    """'wider' when the target is wider on some side and narrower on none; 'narrower' the
    other way round; None for equal or mixed cases."""
    sides = {case["out"], case["in"]}  # the base relative to the target
    if "narrower" in sides and "wider" not in sides:
        return "wider"      # base narrower = target wider
    if "wider" in sides and "narrower" not in sides:
        return "narrower"
    return None


def law4(curves: dict[str, Record], ratio_keys: Sequence[str],
         width_cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Larger width mismatch lowers lambda*; a wider target hurts less than a narrower one."""
    ratios = []
    for r in ok(curves.get(k) for k in ratio_keys):
        ratio = r["target_width"] / r["base_width"]
        ratios.append({"family": r["base_family"], "base": r["base"], "target": r["target"],
                       "ratio": ratio, "mismatch": round(abs(math.log2(ratio)), 6),
                       "lambda": r["aligned"]["threshold"],
                       "mean_loss": r["aligned"]["mean_lmc_loss"]})
    levels: dict[float, list[dict]] = {}
    for x in ratios:
        levels.setdefault(x["mismatch"], []).append(x)
    by_level = {str(lv): {"n": len(xs), "lambda": _avg([x["lambda"] for x in xs]),
                          "mean_loss": _avg([x["mean_loss"] for x in xs])}
                for lv, xs in sorted(levels.items())}
    checks = []
    rho = spearman([x["mismatch"] for x in ratios], [x["lambda"] for x in ratios])
    if len(levels) >= 2:
        lo, hi = min(levels), max(levels)
        checks.append(_avg([x["lambda"] for x in levels[hi]]) <
                      _avg([x["lambda"] for x in levels[lo]]))
    direction: dict[str, list[float]] = {"wider": [], "narrower": []}
    direction_loss: dict[str, list[float]] = {"wider": [], "narrower": []}
    by_source: dict[str, dict[str, list[float]]] = {
        "width ratios": {"wider": [], "narrower": []},
        "nine cases": {"wider": [], "narrower": []}}
    for x in ratios:
        if x["ratio"] != 1:
            d = "wider" if x["ratio"] > 1 else "narrower"
            direction[d].append(x["lambda"])
            direction_loss[d].append(x["mean_loss"])
            by_source["width ratios"][d].append(x["lambda"])
    cases = []
    for case in width_cases:
        r = curves.get(case["key"])
        if r is None or "error" in r:
            continue
        d = _case_direction(case)
        cases.append({**case, "lambda": r["aligned"]["threshold"],
                      "mean_loss": r["aligned"]["mean_lmc_loss"],
                      "naive_lambda": r["naive"]["threshold"],
                      "naive_mean_loss": r["naive"]["mean_lmc_loss"], "direction": d})
        if d is not None:
            direction[d].append(r["aligned"]["threshold"])
            direction_loss[d].append(r["aligned"]["mean_lmc_loss"])
            by_source["nine cases"][d].append(r["aligned"]["threshold"])
    if direction["wider"] and direction["narrower"]:
        checks.append(_avg(direction["wider"]) > _avg(direction["narrower"]))
    return {"law": 4, "title": "Width mismatch lowers lambda*; a wider target hurts less",
            "criterion": "(a) the mean aligned lambda* at the largest width mismatch "
                         "|log2(target width / base width)| is below the mean at the smallest; "
                         "(b) the mean aligned lambda* of merges from a wider target is above "
                         "that from a narrower target (width-ratio pairs and the nine cases)",
            "ratios": ratios, "by_mismatch": by_level, "spearman_mismatch_lambda": rho,
            "wider_target": {"n": len(direction["wider"]), "lambda": _avg(direction["wider"]),
                             "mean_loss": _avg(direction_loss["wider"])},
            "narrower_target": {"n": len(direction["narrower"]),
                                "lambda": _avg(direction["narrower"]),
                                "mean_loss": _avg(direction_loss["narrower"])},
            "direction_by_source": {
                src: {d: {"n": len(v), "lambda": _avg(v)} for d, v in dirs.items()}
                for src, dirs in by_source.items()},
            "width_cases": cases, "checks": checks, "verdict": verdict_of(checks)}


def law5(curves: dict[str, Record], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Layer position (first, middle, last) matters."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        r = curves.get(row["key"])
        if r is None or "error" in r:
            continue
        cell = table.setdefault(row["family"], {}).setdefault(
            row["position"], {"loss": [], "lambda": [], "layer": row["layer"]})
        cell["loss"].append(r["aligned"]["mean_lmc_loss"])
        cell["lambda"].append(r["aligned"]["threshold"])
    families = {}
    for family, positions in table.items():
        summary = {p: {"layer": v["layer"], "mean_loss": _avg(v["loss"]),
                       "lambda": _avg(v["lambda"])} for p, v in positions.items()}
        losses = [v["mean_loss"] for v in summary.values()]
        spread = (max(losses) - min(losses)) / mean(losses) if len(losses) > 1 and \
            mean(losses) > 0 else math.nan
        worst = max(summary, key=lambda p: summary[p]["mean_loss"])
        families[family] = {"positions": summary, "relative_spread": spread,
                            "worst_position": worst,
                            "matters": bool(spread > POSITION_SPREAD)}
    flags = [f["matters"] for f in families.values()]
    return {"law": 5, "title": "Layer position matters",
            "criterion": f"per family, the aligned mean LMC loss of merging only the first, "
                         f"only the middle or only the last layer differs by more than "
                         f"{POSITION_SPREAD:.0%} of its mean (max - min over mean); held when "
                         "this is so for more than half of the families",
            "families": families, "checks": flags, "verdict": majority_verdict(flags)}


def law6(iterated: Sequence[Record], epsilon: float) -> dict[str, Any]:
    """Iterated small-lambda steps accumulate degradation."""
    families = {}
    for it in iterated:
        if "error" in it:
            continue
        acc = it["accuracy"]
        drop_first = acc[0] - acc[1]
        drop_last = acc[0] - acc[-1]
        singles_ok = all(s["accuracy"] >= acc[0] - epsilon for s in it["single_steps"])
        families[it["family"]] = {
            "steps": len(acc) - 1, "lam": it["lam"], "layer": it["layer"],
            "base_accuracy": acc[0], "after_first": acc[1], "after_last": acc[-1],
            "drop_first": drop_first, "drop_last": drop_last,
            "each_step_alone_within_epsilon": singles_ok,
            "accumulates": bool(drop_last > max(drop_first, 0.0) + epsilon)}
    flags = [f["accumulates"] for f in families.values()]
    return {"law": 6, "title": "Iterated small-lambda steps accumulate degradation",
            "criterion": f"per family, the accuracy drop after the last step exceeds the drop "
                         f"after the first step by more than epsilon ({epsilon:.0%}); held when "
                         "this is so for more than half of the families",
            "families": families, "checks": flags, "verdict": majority_verdict(flags)}
