"""The study's ``report.md`` and ``merges.md``: the verdicts, their tests, and what merging gains.

Every sentence with a number or a verdict is formatted from the study data (``study.json``);
nothing is written by hand, so a law that fails is reported as failing. The per-law sections are
in ``report_laws.py``; this module writes the frame: how to read the report, the summary, what
the verdicts mean for choosing lambda, the gains, reproducibility and the method.
"""

from __future__ import annotations

from typing import Any

from .format import FIGURES, check_rows, ci_text, f, fp, figure, mci, md, pct, table
from .report_laws import SECTIONS, heatmap_table

_INTRO = [
    "## How to read this report", "",
    "*Merging* here means taking some layers (or the whole network) of a *target* model and "
    "blending them into a *base* model: every merged weight is (1 - lambda) x base + lambda x "
    "target. lambda = 0 is the base unchanged, lambda = 1 takes the target's layer completely. "
    "The *naive* merge blends units by their index; the *aligned* merge first reorders the "
    "target's units to match the base's (weight matching or the generalized permutations of "
    "MAL), so that like is blended with like.", "",
    "For each merge the study evaluates the merged model at every lambda of a grid on the "
    "base's own task (8x8 digits) and records its *mean LMC loss* (the average test loss along "
    "lambda: lower is a smoother merge) and its *lambda\\** (the largest lambda up to which the "
    "base's accuracy stays within epsilon of the base's own: how much of the target you can "
    "take without losing the base's skill). For merges with a target trained on other data it "
    "also evaluates the merged model on the target's task.", "",
    "Every configuration (a pair of model architectures, layers and data) is measured on "
    "several independently trained zoo seeds. A *check* compares two conditions unit by unit "
    "(for example the naive and aligned merge of the same pair) and states: the number of "
    "units n, the mean effect with a 95% bootstrap interval, the p-value of a stated test, and "
    "the *noise baseline*: how much the same quantity moves between seeds of the same "
    "configuration. A check reads **held** only when p < 0.05, the interval excludes zero on "
    "the predicted side and the mean effect exceeds the noise baseline (and, for lambda\\*, one "
    "grid step); **did not hold** when the same is true in the opposite direction; **not "
    "resolved** otherwise: the data cannot tell. A law with several checks reads held when all "
    "held, partly held when some did.", ""]


def _in_short(data: dict[str, Any]) -> list[str]:
    """The verdicts and the gains in a few plain sentences, before any detail."""
    lines = ["## In short", ""]
    for law in data["laws"]:
        tests = "; ".join(f"{c['name']}: n = {c['n']}, p = {fp(c['p'], '.2g')}, "
                          f"{c['verdict']}" for c in law["checks"])
        lines.append(f"- Law {law['law']}, *{md(law['title'])}*: **{law['verdict']}** "
                     f"({md(tests)}).")
    lines += ["", "**Does merging add a capability?** " + _gain_answer(data["gains"]), ""]
    checks = [c for law in data["laws"] for c in law["checks"]] + data["gains"]["checks"]
    by_design = [c for c in checks
                 if c["verdict"] == "not resolved" and c.get("min_p", 0.0) >= 0.05]
    if by_design:  # a quick run's few seeds: "not resolved" says nothing against a law there
        names = ", ".join(f"{c['name']} (n = {c['n']})" for c in by_design)
        lines += [f"*{len(by_design)} check(s) could not be resolved by design: with so few "
                  f"units the test cannot give p < 0.05 whatever the data ({md(names)}). "
                  + ("This is a quick run (`--small`): the full study decides these." if
                     data["small"] else "More seeds per configuration would decide them.")
                  + "*", ""]
    return lines


def _gain_answer(g: dict[str, Any]) -> str:
    """The plain answer: did any assembly improve a capability without losing the base's?"""
    if g["any_gain"]:
        return ("Yes: at the lambda that keeps the base's skill, merges with targets trained on "
                "other data improved the target-task accuracy on average (see *What merging "
                "gains*).")
    best = g["best"]
    tail = ""
    if best:
        tail = (f" The largest mean gain of one configuration is "
                f"{mci(best['gain'], '.1f', 100)} points ({best['config']}, {best['n']} seeds), "
                f"against {mci(best['target_own_accuracy'], '.1f', 100)}% for the target itself "
                f"on its task; one merge's gain moves by {f(g['checks'][0]['noise'] * 100, '.1f')} "
                "points between seeds of the same configuration.")
    if g["noted"]:
        return ("Not as a rule. Over all merges with targets trained on other data the gain at "
                "lambda\\* is indistinguishable from zero; "
                f"{len(g['noted'])} configuration(s) show a small gain whose interval lies above "
                "the seed-to-seed noise, on too few seeds for a test: "
                f"{', '.join(g['noted'])}. Merging at or below lambda\\* keeps the base's skill "
                "but transfers little of the target's." + tail)
    check = g["checks"][0]
    zero = check.get("at_zero", 0)
    counted = (f" {zero} of {zero + check['n']} such merges have lambda\\* = 0 (no target "
               "weight keeps the base's skill): they are the base itself and are not tested."
               if zero else "")
    return (f"No evidence: no assembly in this study measurably improved a capability "
            f"without losing the base's (the test: {check['verdict']}, n = {check['n']}, "
            f"p = {fp(check['p'], '.2g')}). Merging at or below lambda\\* keeps the base's "
            "skill but showed no transfer of the target's." + counted + tail)


def _summary(data: dict[str, Any]) -> list[str]:
    rows = []
    for law in data["laws"]:
        for c in law["checks"]:
            rows.append([law["law"], law["title"], c["name"], c["n"],
                         ci_text(c["effect"], c["ci"]), fp(c["p"], ".3g"),
                         f(c["minimum_effect"], ".3g"), c["verdict"], f"**{law['verdict']}**"])
    return ["## Summary", ""] + table(
        ["law", "claim", "check", "n", "mean effect [95% CI]", "p", "minimum effect (noise)",
         "check verdict", "law verdict"], rows) + [""]


_ADVICE = {  # law -> (what it means when it held, when the data cannot tell, when contradicted)
    "3": ("donors trained on the base's own data merge more smoothly than donors trained on "
          "other data",
          "whether the donor's training data matters could not be told apart from seed noise",
          "the data contradict it: donors trained on other data merged more smoothly"),
    "4a": ("a larger width mismatch lowers lambda\\*: take a smaller lambda from a donor of "
           "another width",
           "a larger width mismatch did not measurably lower lambda\\* beyond seed noise and "
           "the grid's resolution: the width ratio alone is no guide to lambda",
           "the data contradict it: a larger mismatch gave a larger lambda\\*"),
    "4b": ("a wider donor is safer than a narrower one (larger lambda\\*)",
           "whether a wider or a narrower donor is safer could not be told apart from seed "
           "noise and the grid's resolution",
           "the data contradict it: narrower donors allowed the larger lambda\\*"),
    "5": ("which layer you merge matters more than which donor it comes from",
          "layer position effects could not be told apart from the variation between donors",
          "the data contradict it: donors mattered more than layer positions"),
}


def _advice(law: dict[str, Any]) -> str:
    good, unclear, contrary = _ADVICE[law["law"]]
    v = law["verdict"]
    text = good if v == "held" else f"in part, {good}" if v == "partly held" else \
        contrary if v == "did not hold" else unclear
    tests = "; ".join(f"{c['name']}: n = {c['n']}, mean effect "
                      f"{ci_text(c['effect'], c['ci'], '.3g')}, p = {fp(c['p'], '.3g')}, "
                      f"{c['verdict']}" for c in law["checks"])
    return f"- **Law {law['law']} ({v}):** {text} ({tests})."


def _position_order(law5: dict[str, Any]) -> str:
    means = {}
    for p in ("first", "middle", "last"):
        vals = [fam["positions"][p]["mean_loss"]["mean"] for fam in law5["families"].values()
                if p in fam["positions"]]
        if vals:
            means[p] = sum(vals) / len(vals)
    if len(means) < 2:
        return ""
    worst, best = max(means, key=means.get), min(means, key=means.get)
    return (f" Averaged over the families, merging the {worst} layer hurt most (mean LMC loss "
            f"{means[worst]:.3f}) and the {best} layer least ({means[best]:.3f}): take a "
            f"smaller lambda for the {worst} layer.")


def _choosing_lambda(data: dict[str, Any]) -> list[str]:
    """What the verdicts mean for a user choosing lambda (numbers from the data)."""
    laws = {law["law"]: law for law in data["laws"]}
    lines = ["## What this means when you choose lambda", ""]
    het = laws["1"]["groups"].get("layer-level, heterogeneous")
    whole = laws["1"]["groups"].get("whole-model, same family")
    c1 = {c["name"]: c for c in laws["1"]["checks"]}
    aligned_helps = c1.get("layer-level, heterogeneous: loss", {}).get("verdict") == "held"
    lines.append(
        f"- **Law 1 ({laws['1']['verdict']}):** "
        + ("align before you merge: " if aligned_helps else
           "aligning did not measurably beat naive merging in every respect: ")
        + (f"across {het['n']} heterogeneous layer merges the aligned merge's mean LMC loss is "
           f"{mci(het['loss_aligned'])} against {mci(het['loss_naive'])} naive, and its "
           f"lambda\\* {mci(het['lambda_aligned'], '.2f')} against "
           f"{mci(het['lambda_naive'], '.2f')}. " if het else "")
        + (f"Whole-model merges of two seeds of one architecture keep the base's accuracy "
           f"only up to lambda\\* {mci(whole['lambda_aligned'], '.2f')} even when aligned." if whole
           else ""))
    l2 = laws["2"]
    lines.append(
        f"- **Law 2 ({l2['verdict']}):** {l2['configurations_always_below']} of "
        f"{l2['configurations']} pair configurations have lambda\\* < 1 on every seed; over all "
        f"{l2['n']} merges lambda\\* averages {mci(l2['lambda_'], '.2f')} and ranges from "
        f"{f(l2['min'], '.2f')} to {f(l2['max'], '.2f')}. No single lambda is safe for every "
        "pair: measure the curve of your own pair (`mal curve`) and stay below its lambda\\*.")
    l6 = laws["6"]
    c6 = l6["checks"][0]
    lines.append(
        f"- **Law 6 ({l6['verdict']}):** chains of steps, each at half its own lambda\\* (so "
        f"each step alone keeps the base's accuracy), lost "
        f"{ci_text(c6['effect'] * 100, [x * 100 for x in c6['ci']], '.1f')} accuracy points "
        "more than their worst single step (p = " + fp(c6["p"], ".3g") + "). "
        + ("Small steps add up: re-measure the merged model after every step instead of "
           "trusting each step's own threshold." if l6["verdict"] == "held" else
           "Whether small steps add up could not be told apart from seed noise."))
    for key in ("3", "4a", "4b", "5"):
        lines.append(_advice(laws[key]) + (_position_order(laws[key])
                                           if key == "5" and laws[key]["verdict"] == "held"
                                           else ""))
    return lines + [""]


def _gains(data: dict[str, Any]) -> list[str]:
    g = data["gains"]
    check, check_rep = g["checks"]
    lines = ["## What merging gains", "",
             "A merge is only worth making if the merged model can do something the base could "
             "not. For every merge with a target trained on other data (permuted, rotated or "
             "inverted digits), the merged model is read at its lambda\\* (so the base's own "
             "task stays within epsilon) and scored on the target's task. *Gain* is that "
             "accuracy minus the base's own accuracy on the target's task. The target model "
             "itself reaches the accuracy in the last column on its task: that is the skill a "
             "perfect merge would transfer.", ""]
    if check["n"]:
        lines.append(
            f"**In plain words:** over {check['n']} different-data merges with lambda\\* > 0 "
            f"the mean gain is "
            f"{ci_text(check['effect'] * 100, [x * 100 for x in check['ci']], '.1f')} accuracy "
            f"points (p = {fp(check['p'], '.3g')}, check: **{check['verdict']}**)"
            + (f"; with REPAIR "
               f"{ci_text(check_rep['effect'] * 100, [x * 100 for x in check_rep['ci']], '.1f')}"
               f" points over {check_rep['n']} merges (**{check_rep['verdict']}**)"
               if check_rep["n"] else "") + ". "
            + _gain_answer(g))
        lines.append("")
    lines += check_rows([check, check_rep]) + [""]
    rows = []
    for c in sorted(g["configs"], key=lambda c: (c["kind"], c["config"])):
        rows.append([c["config"], c["kind"], c["n"], mci(c.get("lambda"), ".2f"),
                     mci(c.get("base_accuracy"), ".1f", 100), mci(c.get("base_task"), ".1f", 100),
                     mci(c.get("base_on_target"), ".1f", 100),
                     mci(c.get("target_task"), ".1f", 100), mci(c.get("gain"), ".1f", 100),
                     mci(c.get("gain_repair"), ".1f", 100),
                     mci(c.get("target_own_accuracy"), ".1f", 100)])
    lines += ["Per configuration (means over seeds with 95% intervals; accuracies in %, gains "
              "in accuracy points):", ""]
    lines += table(["configuration (base <- target, layers)", "merge", "seeds", "lambda*",
                    "base task: base", "base task: merged", "target task: base",
                    "target task: merged", "gain", "gain with REPAIR",
                    "target task: the target itself"], rows)
    lines += ["", "Every merge of the study (same-data ones included, whose target task is the "
              "base's) is listed with the same columns in [merges.md](merges.md).", ""]
    return lines


def _reproducibility(data: dict[str, Any]) -> list[str]:
    n = data["numerics"]
    env = ", ".join(f"{k}={v}" for k, v in n["env"].items())
    lines = ["## Reproducibility", "",
             f"Versions: torch {n['torch']}, numpy {n['numpy']}, scipy {n['scipy']}, python "
             f"{n['python']}, mal_desktop {n['mal_desktop']} ({n['machine']}).", "",
             "Every zoo model is trained, and every measurement made, in a worker process with "
             f"pinned numerics: {env}; {n['torch_threads']} torch thread, deterministic "
             "algorithms, oneDNN off. Training is seeded, with a fixed data order. Under these "
             "settings the same torch build gives bit-identical model files and identical "
             "numbers on any x86-64 CPU (ATen's portable kernels instead of the CPU's vector "
             "units, MKL's reproducibility mode); the statistics are seeded too. The sha256 of "
             "every model the study used:", ""]
    rows = [[m["name"], m["dataset"], m["seed"], pct(m["test_accuracy"]), f"`{m['sha256']}`"]
            for m in sorted(data["zoo"]["models"], key=lambda m: m["name"])]
    return lines + table(["model", "trained on", "seed", "test accuracy", "sha256"], rows) + [""]


def _method(data: dict[str, Any]) -> list[str]:
    s = data["settings"]
    return ["## Method", "",
            f"- Every curve is evaluated on the {data['dataset']} test split (the base models' "
            f"task) at {len(data['lambdas'])} evenly spaced lambdas from 0 to 1; lambda\\* is "
            f"the largest grid lambda up to which base-task accuracy stays within "
            f"{data['epsilon']:.0%} of the base's.",
            f"- Seeds: {len(data['seeds'])} per configuration "
            f"({', '.join(map(str, data['seeds']))}). "
            "Replicate r takes its base from seed r and its partners from the next seeds, so "
            "replicates use different models.",
            "- Naive merge: index-aligned (the target's first units, zero-padded or truncated). "
            "Aligned merge: chain alignment of the layer prefix (local two-sided alignment "
            "where the two prefixes differ, e.g. across families); whole-model curves use "
            f"whole-model weight matching restarted from {s['restarts']} seeds, keeping the "
            "restart with the highest matching objective.",
            "- REPAIR: for bases with BatchNorm, the aligned merge is also evaluated with its "
            "BatchNorm statistics re-estimated on the base's training split at every interior "
            "lambda (an addition to MAL).",
            "- Layers: first = the first weight layer, last = the head, middle = the weight "
            "layer with both sides hidden nearest the middle of the network.",
            f"- Iterated merges: up to {s['iterated_steps']} steps, donors taken in turn, each "
            f"step at {s['step_fraction']:g} x that donor's own lambda\\* (donors with lambda\\* "
            "= 0 left out), each aligned to the current merged base.",
            "- Tests: Wilcoxon signed-rank (two-sided, scipy.stats) for paired differences, "
            "Kruskal-Wallis for dependence on the configuration, exact binomial for shares; 95% "
            "intervals by percentile bootstrap over units (4000 resamples, fixed seed). Noise "
            "baseline: pooled standard deviation of the unit's value across seeds of the same "
            "configuration.",
            "- The study adds models to the demo zoo (folder study-extras): every configuration "
            "at every seed, different-data variants of every family and the nine width-case "
            "MLPs. Measured curves are cached by the sha256 of their model files.", ""]


def render_report(data: dict[str, Any]) -> str:
    """The whole report.md text from the study data."""
    t = data["timing"]
    zoo = data["zoo"]
    step = data["lambdas"][1] - data["lambdas"][0]
    lines = ["# The laws of Model Assembly Learning, measured on the demo zoo", "",
             f"Generated by `mal study`{' --small' if data['small'] else ''} "
             f"(mal_desktop {data['version']}) on {data['created_at']}. {len(zoo['models'])} "
             f"models of {len(zoo['families'])} families ({', '.join(zoo['families'])}), "
             f"{len(data['seeds'])} seeds per configuration; evaluation on the "
             f"{data['dataset']} test split; lambda grid of {len(data['lambdas'])} points; "
             f"epsilon {data['epsilon']:.0%} for lambda\\*.", "",
             f"Run time with {t['workers']} worker processes: zoo {t['zoo_seconds']:.1f} s "
             f"({t['zoo_trained']} models trained, {t['zoo_reused']} reused), {t['curves']} "
             f"curves {t['curve_seconds']:.1f} s ({t['curves_cached']} from the cache), "
             f"{t['iterated']} iterated chains {t['iterated_seconds']:.1f} s; total "
             f"{t['total_seconds']:.1f} s.", ""]
    lines += _in_short(data) + _INTRO + _summary(data) + _choosing_lambda(data) + _gains(data)
    for law in data["laws"]:
        lines += [f"## Law {law['law']}: {law['title']}", ""]
        lines += SECTIONS[law["law"]](law, data, step)
    lines += ["## Architecture x architecture heatmaps", "",
              "Mean LMC loss (aligned) of merging a target's head into each family's base "
              "(mean over seeds).", "", "Same data:", ""]
    lines += heatmap_table(data, "same") + ["", "Different data (digits-rot90):", ""]
    lines += heatmap_table(data, "different") + [""]
    lines += _reproducibility(data) + _method(data)
    errors = [r for r in data["curves"] if "error" in r]
    errors += [it for it in data["iterated"] if "error" in it]
    if errors:
        lines += ["## Measurements that failed", ""]
        lines += [f"- {r.get('key', r.get('base'))}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def render_merges(data: dict[str, Any]) -> str:
    """merges.md: every merge's base-task and target-task numbers at lambda*, with REPAIR."""
    lines = ["# Every merge of the study: base task and target task at lambda*", "",
             "One row per merge (curve) of `study.json`, read at the aligned merge's lambda\\* "
             "(REPAIR columns at the repaired curve's own lambda\\*). Base task: digits. Target "
             "task: the data the target was trained on (for same-data merges, digits again). "
             "Gain: target-task accuracy of the merge minus the base's own on that task, in "
             "points. See report.md for how these numbers are judged.", ""]
    rows = []
    for r in data["gains"]["rows"]:
        layers = ", ".join(f"{s}>{d}" for s, d in r["layers"]) or "whole model"
        rows.append([r["base"], r["target"], layers, r["target_dataset"], f(r.get("lambda"), ".2f"),
                     pct(r.get("base_accuracy")), pct(r.get("base_task")),
                     pct(r.get("base_on_target")), pct(r.get("target_task")),
                     f(r["gain"] * 100, ".1f") if "gain" in r else "-",
                     f(r.get("lambda_repair"), ".2f"), pct(r.get("base_task_repair")),
                     pct(r.get("target_task_repair")),
                     f(r["gain_repair"] * 100, ".1f") if "gain_repair" in r else "-"])
    lines += table(["base", "target", "layers", "target task", "lambda*", "base task: base",
                    "base task: merged", "target task: base", "target task: merged", "gain",
                    "REPAIR lambda*", "REPAIR base task", "REPAIR target task", "REPAIR gain"],
                   rows)
    return "\n".join(lines) + "\n"


__all__ = ["FIGURES", "render_report", "render_merges", "figure"]
