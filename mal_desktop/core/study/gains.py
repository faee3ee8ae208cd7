"""What an assembly gains: the merged model on the base's task and on the target's task.

For every merge (curve) the aligned merge is read at its lambda* (the largest lambda that keeps
the base's own task within epsilon), where a user who must keep the base's skill would merge:

- base task: the merged model's accuracy on digits, and the base's own;
- target task: the merged model's accuracy on the data the target was trained on, and the
  base's own accuracy there (the merge at lambda 0);
- gain: target-task accuracy of the merge minus the base's own on the target task - what the
  merge added to what the base could already do (merges whose lambda* is 0 are the base
  itself: they are counted, not tested);
- the same with REPAIR (BatchNorm statistics re-estimated on the base's training data) at the
  repaired curve's own lambda*, for bases with BatchNorm.

For a same-data merge the target's task is the base's, so its gain is the change of the base
task's accuracy (at most zero up to epsilon, by the choice of lambda). The question that
matters is asked of the different-data merges: does any of them add the target's skill while
keeping the base's? One check (``stats.paired_check``) over all of them, and per configuration.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from . import stats
from .stats import mean_ci

Record = dict[str, Any]


def _at(lambdas: list[float], threshold: float) -> int:
    return min(range(len(lambdas)), key=lambda i: abs(lambdas[i] - threshold))


def merge_row(r: Record, lambdas: list[float], target_own: float | None) -> Record:
    """One merge's base-task and target-task numbers at lambda* (see the module docstring)."""
    other = "target_task" in r
    row = {"key": r["key"], "kind": r["kind"], "base": r["base"], "target": r["target"],
           "layers": r["layers"], "config": r["config"], "target_dataset": r["target_dataset"],
           "target_own_accuracy": target_own}
    for series in ("aligned", "aligned_repair"):
        if series not in r:
            continue
        s = r[series]
        i = _at(lambdas, s["threshold"])
        if other:
            tt = r["target_task"][series]
        else:
            tt = s["accuracy"]
        if tt is None:
            continue
        suffix = "" if series == "aligned" else "_repair"
        row.update({f"lambda{suffix}": s["threshold"],
                    f"base_accuracy{suffix}": s["accuracy"][0],
                    f"base_task{suffix}": s["accuracy"][i],
                    f"base_on_target{suffix}": tt[0],
                    f"target_task{suffix}": tt[i],
                    f"gain{suffix}": tt[i] - tt[0]})
    return row


def gains(curves: dict[str, Record], lambdas: list[float],
          accuracy_of: dict[str, float]) -> Record:
    """Every merge's row, per-configuration means of the different-data merges, and the check
    that merging adds target-task accuracy while keeping the base's."""
    rows = [merge_row(r, lambdas, accuracy_of.get(r["target"])) for r in curves.values()
            if "error" not in r]
    different = [x for x in rows if x["target_dataset"] != "digits" and "gain" in x]
    # A merge whose lambda* is 0 is the base itself: its gain is 0 by construction, and
    # counting it would test the choice of lambda, not what merging adds. Counted apart.
    moved = [x for x in different if x["lambda"] > 0]
    check = stats.paired_check(
        "gain on the target task", "at lambda* (> 0), the merge is more accurate on the "
        "target's task than the base alone", [x["gain"] for x in moved],
        [x["config"] for x in moved], +1,
        "one different-data merge with lambda* > 0: target-task accuracy at lambda* minus the "
        "base's own", at_zero=len(different) - len(moved))
    rep = [x for x in different if "gain_repair" in x and x["lambda_repair"] > 0]
    check_repair = stats.paired_check(
        "gain with REPAIR", "with BatchNorm statistics re-estimated, the merge at its lambda* "
        "is more accurate on the target's task than the base alone",
        [x["gain_repair"] for x in rep], [x["config"] for x in rep], +1,
        "one different-data merge of a BatchNorm base with a repaired lambda* > 0: "
        "target-task accuracy there minus the base's own",
        at_zero=sum(1 for x in different if "gain_repair" in x) - len(rep))
    by_config: dict[str, list[Record]] = defaultdict(list)
    for x in different:
        by_config[x["config"]].append(x)
    configs = []
    for config, xs in by_config.items():
        entry = {"config": config, "kind": xs[0]["kind"], "n": len(xs),
                 "target_dataset": xs[0]["target_dataset"]}
        for field in ("lambda", "base_accuracy", "base_task", "base_on_target", "target_task",
                      "gain", "target_own_accuracy", "gain_repair", "target_task_repair",
                      "base_task_repair"):
            vals = [x[field] for x in xs if x.get(field) is not None]
            if vals:
                entry[field] = mean_ci(vals)
        configs.append(entry)
    best = max(configs, key=lambda c: c["gain"]["mean"], default=None)
    # Per configuration only a few seeds: no test can reach p < 0.05, so a configuration is
    # only *noted* when its whole interval lies above the seed-to-seed noise of gains.
    noise = check["noise"] if check["noise"] == check["noise"] else 0.0
    noted = [c["config"] for c in configs if c["gain"]["ci"][0] > noise]
    return {"rows": rows, "configs": configs, "checks": [check, check_repair],
            "best": best, "n_different": len(different), "noted": noted,
            "any_gain": any(c["verdict"] == stats.HELD for c in (check, check_repair))}
