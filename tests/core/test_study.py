"""The MAL study in --small mode: reproducible numbers, verdicts that follow from their own tests,
and a report whose claims are exactly what its own numbers say."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import wilcoxon

from mal_desktop.core.progress import CancelToken, Cancelled, run_job
from mal_desktop.core.study import FIGURES, StudySettings, study_job
from mal_desktop.core.study import stats

pytestmark = pytest.mark.slow


def _run(zoo: Path, out: Path, **kw) -> dict[str, Any]:
    events: list = []
    result = run_job(study_job(zoo, out, small=True, **kw), events.append)
    return {"result": result, "events": events,
            "data": json.loads(result.data_path.read_text()),  # what a reader sees: strict JSON
            "report": result.report_path.read_text()}


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, small_study_zoo_dir) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("study")
    return {"root": root, "zoo": small_study_zoo_dir,
            **_run(small_study_zoo_dir, root / "out")}


def _numbers(data: dict[str, Any]) -> dict[str, Any]:
    """The study data less what may change between runs: times, dates and folders."""
    data = json.loads(json.dumps(data))
    for key in ("created_at", "timing"):
        data.pop(key)
    data["zoo"].pop("dir")
    data["settings"].pop("workers")
    for r in data["curves"] + data["iterated"]:
        r.pop("seconds", None)
    return data


# -- reproducibility -------------------------------------------------------------------------
def test_rerun_from_scratch_gives_identical_numbers(small_study, tmp_path: Path) -> None:
    """A second study trains a fresh zoo and measures everything again, with one worker instead
    of two: every number, interval, p-value, verdict and model hash is the same."""
    again = _run(tmp_path / "zoo", tmp_path / "out",
                 settings=replace(StudySettings.for_mode(True), workers=1))
    assert again["data"]["timing"]["zoo_trained"] > 0 == again["data"]["timing"]["zoo_reused"]
    assert again["data"]["timing"]["curves_cached"] == 0
    assert _numbers(again["data"]) == _numbers(small_study["data"])


def test_rerun_on_a_built_zoo_reads_the_cache(small_study, tmp_path: Path) -> None:
    again = _run(small_study["zoo"], tmp_path / "out")
    t = again["data"]["timing"]
    assert t["zoo_trained"] == 0 and t["curves_cached"] == t["curves"] > 0
    assert _numbers(again["data"]) == _numbers(small_study["data"])


def test_report_records_versions_and_model_hashes(small_study) -> None:
    data, report = small_study["data"], small_study["report"]
    n = data["numerics"]
    assert {"torch", "numpy", "scipy", "python", "mal_desktop"} <= set(n)
    for key in ("torch", "numpy", "python", "mal_desktop"):
        assert f"{key} {n[key]}" in report
    used = {r[k] for r in data["curves"] for k in ("base", "target")}
    hashes = {m["name"]: m["sha256"] for m in data["zoo"]["models"]}
    assert used <= set(hashes)
    for name in used:
        assert re.fullmatch(r"[0-9a-f]{64}", hashes[name])
        assert f"`{hashes[name]}`" in report


# -- verdicts ---------------------------------------------------------------------------------
def _expected_verdict(c: dict[str, Any]) -> str:
    """The verdict rule, written again from the report's own words."""
    if c["n"] == 0 or c["effect"] is None:
        return "not measured"
    p, (lo, hi), d = c["p"], c["ci"], c["direction"]
    if p is None or not p < 0.05:
        return "not resolved"
    if d * lo > 0 and d * hi > 0 and d * c["effect"] > c["minimum_effect"]:
        return "held"
    if -d * lo > 0 and -d * hi > 0 and -d * c["effect"] > c["minimum_effect"]:
        return "did not hold"
    return "not resolved"


def _all_checks(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for law in data["laws"] for c in law["checks"]] + data["gains"]["checks"]


def test_every_verdict_follows_from_its_own_p_value_and_interval(small_study) -> None:
    data = small_study["data"]
    checks = _all_checks(data)
    assert len(checks) >= 10
    for c in checks:
        assert c["verdict"] == _expected_verdict(c), c["name"]
        if c["verdict"] == "held":  # never on chance or noise
            assert c["p"] < 0.05 and c["effect"] * c["direction"] > c["minimum_effect"]
        if c["n"]:
            lo, hi = c["ci"]
            assert lo <= c["effect"] + 1e-12 and c["effect"] <= hi + 1e-12, c["name"]
            assert c["minimum_effect"] >= (c["noise"] or 0.0)
    for law in data["laws"]:
        vs = [c["verdict"] for c in law["checks"] if c["verdict"] != "not measured"]
        expected = ("not measured" if not vs else "held" if all(v == "held" for v in vs)
                    else "partly held" if "held" in vs
                    else "did not hold" if "did not hold" in vs else "not resolved")
        assert law["verdict"] == expected, law["law"]
    assert [law["law"] for law in data["laws"]] == ["1", "2", "3", "4a", "4b", "5", "6"]


def test_law1_p_values_recomputed_from_the_curves(small_study) -> None:
    """The checks' n, mean and p are what scipy gives on the raw curve records."""
    data = small_study["data"]
    law1 = data["laws"][0]
    whole = [r for r in data["curves"] if "error" not in r and r["kind"] == "whole"
             and r["target_dataset"] == r["base_dataset"]]
    d = [r["naive"]["mean_lmc_loss"] - r["aligned"]["mean_lmc_loss"] for r in whole]
    check = law1["checks"][0]
    assert check["n"] == len(d) > 0
    assert check["effect"] == pytest.approx(sum(d) / len(d))
    p = 1.0 if all(x == 0 for x in d) else wilcoxon(d, zero_method="zsplit").pvalue
    assert check["p"] == pytest.approx(p)


def test_verdict_rule() -> None:
    held = stats.paired_check("x", "x", [0.5, 0.6, 0.55, 0.7, 0.65, 0.6, 0.58], list("abcdefg"),
                              +1, "u")
    assert held["verdict"] == "held" and held["p"] < 0.05
    opposite = stats.paired_check("x", "x", [-0.5, -0.6, -0.55, -0.7, -0.65, -0.6, -0.58],
                                  list("abcdefg"), +1, "u")
    assert opposite["verdict"] == "did not hold"
    few = stats.paired_check("x", "x", [0.5, 0.6, 0.7], list("abc"), +1, "u")
    assert few["verdict"] == "not resolved" and few["p"] > 0.05  # 3 pairs cannot reach 0.05
    assert few["min_p"] == 0.25 and "n = 3 cannot resolve it" in few["reason"]  # said so
    assert stats.smallest_paired_p(6) < 0.05 <= stats.smallest_paired_p(5)
    # significant, but smaller than one grid step of lambda: not resolved
    grid = stats.paired_check("x", "x", [0.05, 0.06, 0.05, 0.07, 0.05, 0.06, 0.05],
                              list("abcdefg"), +1, "u", resolution=0.1)
    assert grid["p"] < 0.05 and grid["verdict"] == "not resolved"
    # significant, but within the seed-to-seed noise of the same configuration
    noisy = stats.paired_check("x", "x", [0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 0.2, 1.0],
                               list("aabbccdd"), +1, "u")
    assert noisy["p"] < 0.05 and noisy["noise"] > noisy["effect"]
    assert noisy["verdict"] == "not resolved"
    assert stats.bootstrap_ci([1.0, 2.0, 4.0]) == stats.bootstrap_ci([1.0, 2.0, 4.0])


# -- the report -------------------------------------------------------------------------------
def test_report_states_every_verdict_with_its_test(small_study) -> None:
    data, report = small_study["data"], small_study["report"]
    sections = dict(re.findall(r"^## Law (\w+): .*?\*\*Verdict: ([a-z ]+)\*\*", report,
                               re.M | re.S))
    assert sections == {law["law"]: law["verdict"] for law in data["laws"]}
    for law in data["laws"]:
        for c in law["checks"]:
            row = next(line for line in report.splitlines()
                       if line.startswith(f"| {law['law']} | ") and f"| {c['name']} |" in line)
            assert f"| {c['n']} |" in row and f"**{law['verdict']}**" in row
            assert f"| {c['verdict']} |" in row
            if math.isfinite(c["p"]):
                assert f"| {c['p']:.3g} |" in row
    assert "## What merging gains" in report and "In plain words" in report
    assert "## What this means when you choose lambda" in report
    for name, _caption in FIGURES.values():
        assert f"]({name})" in report


def test_gains_give_base_and_target_task_side_by_side(small_study) -> None:
    data = small_study["data"]
    rows = data["gains"]["rows"]
    assert len(rows) == len([r for r in data["curves"] if "error" not in r])
    different = [r for r in rows if r["target_dataset"] != "digits"]
    assert different
    for r in different:
        assert r["gain"] == pytest.approx(r["target_task"] - r["base_on_target"])
        assert r["base_task"] >= r["base_accuracy"] - data["epsilon"] - 1e-9  # at lambda*
    assert any("gain_repair" in r for r in different)  # BatchNorm bases (cnn, resnet)
    # a merge at lambda* = 0 is the base itself (gain 0 by construction): counted, not tested
    check = data["gains"]["checks"][0]
    at_zero = sum(1 for r in different if r["lambda"] == 0)
    assert (check["n"], check["at_zero"]) == (len(different) - at_zero, at_zero)
    report = small_study["report"]
    assert "**Does merging add a capability?** No:" not in report  # never more than the test
    if any(c["verdict"] == "not resolved" and c["min_p"] >= 0.05
           for law in data["laws"] for c in law["checks"]):  # a quick run's few seeds
        assert "could not be resolved by design" in report and "`--small`" in report
    merges = (small_study["result"].out_dir / "merges.md").read_text()
    assert merges.count("\n| ") >= len(rows)


def test_every_law_is_measured(small_study) -> None:
    data = small_study["data"]
    assert all(law["verdict"] != "not measured" for law in data["laws"])
    assert not [r for r in data["curves"] if "error" in r]
    assert len(data["seeds"]) == 2


def test_curves_are_consistent(small_study) -> None:
    data = small_study["data"]
    grid = data["settings"]["grid"]
    assert data["lambdas"][0] == 0.0 and data["lambdas"][-1] == 1.0 and len(data["lambdas"]) == grid
    for r in data["curves"]:
        same = r["target_dataset"] == r["base_dataset"]
        assert ("naive" in r) == same  # naive merges are compared on same-data pairs (law 1)
        assert len(r["aligned"]["loss"]) == grid
        if not same:
            assert len(r["target_task"]["aligned"]) == grid
            continue
        # lambda 0 is the base itself, whatever the alignment.
        assert r["naive"]["loss"][0] == r["aligned"]["loss"][0]
        if r["kind"] == "whole":
            # lambda 1 is the target, permuted or not: the same function.
            assert r["naive"]["loss"][-1] == pytest.approx(r["aligned"]["loss"][-1], abs=1e-4)
            assert len(r["matching"]["restarts"]) == data["settings"]["restarts"]
    for it in data["iterated"]:
        # each step stays under its own threshold: half the donor's measured lambda*
        assert all(0 < lam < 1 for lam in it["lams"])
        assert len(it["accuracy"]) == len(it["lams"]) + 1


def test_progress_ends_at_one(small_study) -> None:
    fractions = [e.fraction for e in small_study["events"]]
    assert fractions[-1] == 1.0
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:]))
    assert {"zoo", "study"} <= {e.stage for e in small_study["events"]}


def test_cancel_writes_no_report(small_study, tmp_path: Path) -> None:
    cancel = CancelToken()
    job = study_job(small_study["zoo"], tmp_path / "out", small=True, cancel=cancel)
    zoo_cached = []
    with pytest.raises(Cancelled):
        for event in job:
            if event.stage == "zoo" and isinstance(event.payload, dict):
                zoo_cached.append(event.payload.get("cached"))
            if event.stage == "study" and event.message.startswith("planning"):
                cancel.cancel()
    assert zoo_cached and all(zoo_cached)  # the zoo of the first run was reused, not retrained
    assert not (tmp_path / "out" / "report.md").exists()
    assert not (tmp_path / "out" / "study.json").exists()


def test_small_study_never_builds_in_the_demo_zoo(tmp_path, monkeypatch):
    """Its models share demo names but not their training: they must live beside the report."""
    demo = tmp_path / "demo-zoo"
    monkeypatch.setenv("MAL_ZOO_DIR", str(demo))
    cancel = CancelToken()

    def stop_after_first_model(event):
        if (tmp_path / "out" / "small-zoo" / "zoo.json").exists():
            cancel.cancel()

    with pytest.raises(Cancelled):
        run_job(study_job(None, tmp_path / "out", small=True, cancel=cancel),
                stop_after_first_model)
    assert not demo.exists()
    assert (tmp_path / "out" / "small-zoo" / "zoo.json").exists()
