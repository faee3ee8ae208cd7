"""The MAL study in --small mode: every law measured, and a report whose claims are exactly what
its own numbers say (recomputed here independently from study.json)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from mal_desktop.core.progress import CancelToken, Cancelled, run_job
from mal_desktop.core.study import FIGURES, study_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("study")
    events = []
    result = run_job(study_job(root / "zoo", root / "out", small=True), events.append)
    data = json.loads(result.data_path.read_text())  # what a reader sees: strict JSON
    return {"root": root, "result": result, "events": events, "data": data,
            "report": result.report_path.read_text()}


# -- an independent reading of the laws from the raw records -------------------------------
def _verdict(checks: list[bool], majority: bool = False) -> str:
    if not checks:
        return "not measured"
    n = sum(checks)
    if majority:
        return "held" if n > len(checks) / 2 else "did not hold" if n == 0 else "partly held"
    return "held" if n == len(checks) else "did not hold" if n == 0 else "partly held"


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else math.nan


def _hetero(r) -> bool:
    return r["kind"] == "layer" and (r["base_family"] != r["target_family"] or
                                     r["base_width"] != r["target_width"] or
                                     r["base_width"] is None)


def expected_verdicts(data: dict[str, Any]) -> dict[int, str]:
    curves = {r["key"]: r for r in data["curves"] if "error" not in r}
    same = [r for r in curves.values() if r["target_dataset"] == r["base_dataset"]]
    out = {}
    checks = []
    for group in ([r for r in same if r["kind"] == "whole"], [r for r in same if _hetero(r)]):
        if group:
            lower = sum(r["aligned"]["mean_lmc_loss"] < r["naive"]["mean_lmc_loss"]
                        for r in group)
            checks += [lower > len(group) / 2,
                       _mean([r["aligned"]["threshold"] for r in group]) >
                       _mean([r["naive"]["threshold"] for r in group])]
    out[1] = _verdict(checks)

    lams = [r["aligned"]["threshold"] for r in curves.values() if _hetero(r)]
    out[2] = _verdict([sum(x < 1 for x in lams) > len(lams) / 2, len(set(lams)) > 1]
                      if lams else [])

    checks = []
    for kind in ("whole", "layer"):
        better = n = 0
        for d in curves.values():
            if d["target_dataset"] == d["base_dataset"] or d["kind"] != kind:
                continue
            match = [s for s in same if s["base"] == d["base"] and s["layers"] == d["layers"]
                     and s["target_family"] == d["target_family"]
                     and s["target_width"] == d["target_width"]
                     and s["target_seed"] == d["target_seed"]]
            if match:
                n += 1
                better += match[0]["aligned"]["mean_lmc_loss"] < d["aligned"]["mean_lmc_loss"]
        if n:
            checks.append(better > n / 2)
    out[3] = _verdict(checks)

    ratios = []
    for key in data["ratios"]:
        r = curves.get(key)
        if r:
            ratios.append((r["target_width"] / r["base_width"], r["aligned"]["threshold"]))
    levels: dict[float, list[float]] = {}
    for ratio, lam in ratios:
        levels.setdefault(round(abs(math.log2(ratio)), 6), []).append(lam)
    checks = []
    if len(levels) >= 2:
        checks.append(_mean(levels[max(levels)]) < _mean(levels[min(levels)]))
    wider = [lam for ratio, lam in ratios if ratio > 1]
    narrower = [lam for ratio, lam in ratios if ratio < 1]
    for case in data["width_cases"]:
        sides = {case["out"], case["in"]}
        lam = curves[case["key"]]["aligned"]["threshold"]
        if "narrower" in sides and "wider" not in sides:
            wider.append(lam)
        elif "wider" in sides and "narrower" not in sides:
            narrower.append(lam)
    if wider and narrower:
        checks.append(_mean(wider) > _mean(narrower))
    out[4] = _verdict(checks)

    per_family: dict[str, dict[str, list[float]]] = {}
    for row in data["positions"]:
        r = curves.get(row["key"])
        if r:
            per_family.setdefault(row["family"], {}).setdefault(row["position"], []).append(
                r["aligned"]["mean_lmc_loss"])
    flags = []
    for positions in per_family.values():
        losses = [_mean(v) for v in positions.values()]
        flags.append(len(losses) > 1 and (max(losses) - min(losses)) / _mean(losses) > 0.10)
    out[5] = _verdict(flags, majority=True)

    eps = data["epsilon"]
    flags = [(it["accuracy"][0] - it["accuracy"][-1]) >
             max(it["accuracy"][0] - it["accuracy"][1], 0.0) + eps
             for it in data["iterated"] if "error" not in it]
    out[6] = _verdict(flags, majority=True)
    return out


# -- tests ---------------------------------------------------------------------------------
def test_report_verdicts_are_what_the_numbers_say(small_study) -> None:
    data, report = small_study["data"], small_study["report"]
    expected = expected_verdicts(data)
    assert {law["law"]: law["verdict"] for law in data["laws"]} == expected
    summary = dict(re.findall(r"^\| (\d) \| [^|]+ \| \*\*([a-z ]+)\*\* \|$", report, re.M))
    assert {int(k): v for k, v in summary.items()} == expected
    sections = re.findall(r"^## Law (\d): .*?\*\*Verdict: ([a-z ]+)\*\*", report, re.M | re.S)
    assert {int(k): v for k, v in sections} == expected


def test_every_law_is_measured_and_every_figure_referenced(small_study) -> None:
    data, report = small_study["data"], small_study["report"]
    assert [law["law"] for law in data["laws"]] == [1, 2, 3, 4, 5, 6]
    assert all(law["verdict"] != "not measured" for law in data["laws"])
    for name, _caption in FIGURES.values():
        assert f"]({name})" in report
    assert not [r for r in data["curves"] if "error" in r]


def test_report_numbers_come_from_the_data(small_study) -> None:
    data, report = small_study["data"], small_study["report"]
    hetero = [r["aligned"]["threshold"] for r in data["curves"] if _hetero(r)]
    below = sum(x < 1 for x in hetero)
    assert f"{below} of {len(hetero)} heterogeneous pairs" in report
    t = data["timing"]
    assert f"total {t['total_seconds']:.1f} s" in report
    mlp = next(law for law in data["laws"] if law["law"] == 6)["families"]["mlp"]
    assert f"| mlp | {mlp['steps']} | " in report
    # A lambda* comparison closer than one grid step carries a caution, and only then.
    step = data["lambdas"][1] - data["lambdas"][0]
    law1 = next(law for law in data["laws"] if law["law"] == 1)
    for group, v in law1["groups"].items():
        close = abs(v["lambda_aligned"] - v["lambda_naive"]) < step
        assert (f"Note: the naive and aligned mean lambda* of the {group} group" in report) == close


def test_curves_are_consistent(small_study) -> None:
    data = small_study["data"]
    grid = data["settings"]["grid"]
    assert data["lambdas"][0] == 0.0 and data["lambdas"][-1] == 1.0 and len(data["lambdas"]) == grid
    for r in data["curves"]:
        for series in ("naive", "aligned"):
            assert len(r[series]["loss"]) == grid
        # lambda 0 is the base itself, whatever the alignment.
        assert r["naive"]["loss"][0] == pytest.approx(r["aligned"]["loss"][0], abs=1e-6)
        if r["kind"] == "whole":
            # lambda 1 is the target, permuted or not: the same function.
            assert r["naive"]["loss"][-1] == pytest.approx(r["aligned"]["loss"][-1], abs=1e-4)
    for it in data["iterated"]:
        assert len(it["accuracy"]) == data["settings"]["iterated_steps"] + 1


def test_progress_ends_at_one(small_study) -> None:
    fractions = [e.fraction for e in small_study["events"]]
    assert fractions[-1] == 1.0
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:]))
    assert {"zoo", "study"} <= {e.stage for e in small_study["events"]}


def test_cancel_writes_no_report(small_study, tmp_path: Path) -> None:
    cancel = CancelToken()
    job = study_job(small_study["root"] / "zoo", tmp_path / "out", small=True, cancel=cancel)
    zoo_cached = []
    with pytest.raises(Cancelled):
        for event in job:
            if event.stage == "zoo" and isinstance(event.payload, dict):
                zoo_cached.append(event.payload.get("cached"))
            if event.stage == "study" and "curve 2/" in event.message:
                cancel.cancel()
    assert zoo_cached and all(zoo_cached)  # the zoo of the first run was reused, not retrained
    assert not (tmp_path / "out" / "report.md").exists()
    assert not (tmp_path / "out" / "study.json").exists()


def test_small_study_never_builds_in_the_demo_zoo(tmp_path, monkeypatch):
    """Its models share demo names but not their training: they must live beside the report."""
    demo = tmp_path / "demo-zoo"
    monkeypatch.setenv("MAL_ZOO_DIR", str(demo))
    cancel = CancelToken()
    seen = []

    def stop_after_first_model(event):
        seen.append(event)
        if (tmp_path / "out" / "small-zoo" / "zoo.json").exists():
            cancel.cancel()

    with pytest.raises(Cancelled):
        run_job(study_job(None, tmp_path / "out", small=True, cancel=cancel),
                stop_after_first_model)
    assert not demo.exists()
    assert (tmp_path / "out" / "small-zoo" / "zoo.json").exists()
