"""Assembly plan document: validation, change events, JSON round trip, file errors."""

import json

import pytest

from mal_desktop.core.errors import PlanError
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep, load_plan


def _plan() -> AssemblyPlan:
    return AssemblyPlan(base="base.safetensors", zoo={"a": "a.safetensors", "b": "b.pt2"},
                        data="digits",
                        steps=[AssemblyStep("a", "layers.0", "layers.0", 0.3),
                               AssemblyStep("b", "fc", "layers.1", 0.5, "local", "keep")])


def test_step_validation_rejects_bad_values():
    with pytest.raises(PlanError, match="lambda"):
        AssemblyStep("a", "x", "y", 1.5)
    with pytest.raises(PlanError, match="alignment"):
        AssemblyStep("a", "x", "y", 0.5, align="diagonal")
    with pytest.raises(PlanError, match="unmatched"):
        AssemblyStep("a", "x", "y", 0.5, unmatched="drop")


def test_events_follow_every_edit():
    plan = _plan()
    seen = []
    plan.subscribe(seen.append)
    plan.insert_step(1, AssemblyStep("a", "head", "head", 0.1))
    plan.update_step(0, lam=0.9)
    plan.move_step(0, 2)
    plan.remove_step(2)
    assert [c.kind for c in seen] == ["insert", "update", "move", "remove"]
    assert [s.lam for s in plan.steps] == [0.1, 0.5]


def test_json_round_trip_and_relative_paths(tmp_path):
    plan = _plan()
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    loaded = load_plan(path)
    assert loaded.steps == plan.steps
    assert loaded.base == str(tmp_path / "base.safetensors")
    assert loaded.zoo["b"] == str(tmp_path / "b.pt2")
    assert loaded.data == "digits"


def test_plan_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="bad.json: not valid JSON"):
        load_plan(bad)
    bad.write_text(json.dumps({"base": "b", "zoo": {}, "steps": [
        {"source": "ghost", "source_layer": "x", "base_layer": "y"}]}))
    with pytest.raises(PlanError, match="ghost"):
        load_plan(bad)
    bad.write_text(json.dumps({"base": "b", "steps": [{"source": "a"}]}))
    with pytest.raises(PlanError, match="source_layer"):
        load_plan(bad)
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing.json")
