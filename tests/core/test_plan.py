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


def _step_file(tmp_path, **step):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"base": "b.safetensors", "zoo": {"a": "a.safetensors"},
                                "steps": [{"source": "a", "source_layer": "x",
                                           "base_layer": "y", **step}]}))
    return path


@pytest.mark.parametrize("step, message", [
    # a misspelt parameter is refused with the valid names, never silently ignored
    ({"method": "ties", "params": {"densty": 0.3}}, r"no parameter 'densty' \(valid: density\)"),
    ({"method": "linear", "params": {"scale": 2}}, r"no parameter 'scale' \(valid: none\)"),
    ({"method": "ties", "params": {"density": "abc"}}, "density must be a number.*'abc'"),
    ({"method": "dare", "params": {"drop": True}}, "drop must be a number.*True"),
    ({"method": "dare", "params": {"drop": 1.5}}, r"drop must be in \[0.0, 0.99\]"),
    ({"method": "ties", "params": [0.3]}, "'params' must be an object"),
    ({"method": "magic"}, "unknown merge method 'magic'; known: linear"),
    ({"lambda": True}, "lambda must be a number, got True"),
    ({"lambda": "0.5"}, "lambda must be a number, got '0.5'"),
    ({"lambda": None}, "lambda must be a number, got None"),
    ({"lambda": float("nan")}, "lambda must be in \\[0, 1\\], got nan"),
])
def test_plan_steps_are_checked_against_the_method_schema_when_read(tmp_path, step, message):
    path = _step_file(tmp_path, **step)
    with pytest.raises(PlanError, match=message) as info:
        load_plan(path)
    assert str(info.value).startswith(f"{path}: step 1: ")


def test_valid_method_parameters_are_kept(tmp_path):
    plan = load_plan(_step_file(tmp_path, method="ties", params={"density": 0.3}, **{"lambda": 1}))
    assert plan.steps[0].params == (("density", 0.3),) and plan.steps[0].lam == 1


def test_the_memory_estimate_of_merging_a_block_of_a_7b_model_counts_that_block():
    # inputs are memory-mapped: a block's merge needs its new tensors and a bounded chain
    # working set, not the two 13 GB models (the estimate was 77 GB for this plan)
    from mal_desktop.core.merge.chains import CHAIN_WORKING_BYTES
    from mal_desktop.core.merge.preflight import preflight_plan

    shapes = {"model.embed_tokens.weight": (32000, 4096), "lm_head.weight": (32000, 4096)}
    block = {"self_attn.q_proj": (4096, 4096), "self_attn.k_proj": (4096, 4096),
             "self_attn.v_proj": (4096, 4096), "self_attn.o_proj": (4096, 4096),
             "mlp.gate_proj": (11008, 4096), "mlp.up_proj": (11008, 4096),
             "mlp.down_proj": (4096, 11008)}
    for i in range(32):
        shapes.update({f"model.layers.{i}.{name}.weight": shape for name, shape in block.items()})
    plan = AssemblyPlan(base="a", zoo={"b": "b"}, steps=[
        AssemblyStep("b", f"model.layers.31.{name}", f"model.layers.31.{name}", 0.5, align)
        for name in block for align in ("chain", "local", "none")])
    report = preflight_plan(plan, {"a": shapes, "b": shapes})
    block_bytes = 4 * sum(a * b for a, b in block.values())
    assert report.ok
    # each merged layer once (a later step replaces it), the chain's bounded copies and the
    # cost products kept beside them (as large at most: a block at hidden 4096 measured
    # 6.8 GB beyond its files where copies alone were counted as 4.8)
    assert report.memory_bytes == block_bytes + 2 * CHAIN_WORKING_BYTES


def test_a_mistyped_layer_is_answered_with_its_close_names():
    """A 7B Llama has 225 weight layers: the error names the intended one, not all of them."""
    from mal_desktop.core.merge.preflight import layer_hint

    layers = [f"model.layers.{i}.{part}" for i in range(32)
              for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                           "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    layers.append("lm_head")
    assert layer_hint("model.layers.0.mlp.up_prj", layers).startswith(
        " (did you mean model.layers.0.mlp.up_proj or ")
    far = layer_hint("encoder.block", layers)
    assert far == (" (it has 225 weight layers, e.g. model.layers.0.self_attn.q_proj, "
                   "model.layers.0.self_attn.k_proj, model.layers.0.self_attn.v_proj; "
                   "mal inspect lists them)")
    assert layer_hint("conv", ["layers.0", "head"]) == " (its layers: layers.0, head)"


def test_a_steps_norms_round_trip_and_are_checked_when_read(tmp_path):
    step = AssemblyStep("z", "b.0.q", "b.1.q", norms=(("b.0.norm", "b.1.norm"),))
    assert AssemblyStep.from_json(json.loads(json.dumps(step.to_json()))) == step
    assert "norms" not in AssemblyStep("z", "b.0.q", "b.1.q").to_json()  # plans stay as they were
    for bad in ("b.0.norm", [["b.0.norm"]], [["b.0.norm", 3]]):
        with pytest.raises(PlanError, match="'norms' must be \\[donor module, base module\\] pairs"):
            AssemblyStep.from_json({**step.to_json(), "norms": bad})


def test_a_text_dataset_in_a_plan_file_keeps_its_prefix_and_options(tmp_path):
    """'text:/abs/enc.txt' in a plan became '<plan folder>/text:/abs/enc.txt' (the spec was
    taken for one path), and 'text:enc.txt' was looked up in the current folder."""
    from mal_desktop.core.evaluate.datasets import load_dataset

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "enc.txt").write_text("def f(x):\n    return x + 1\n" * 20)
    (tmp_path / "tok.json").write_text("{}")
    for data, expected in [
        (f"text:{tmp_path}/corpus/enc.txt", f"text:{tmp_path}/corpus/enc.txt"),
        ("text:corpus/enc.txt;context=32", f"text:{tmp_path}/corpus/enc.txt;context=32"),
        ("text:corpus;tokenizer=tok.json;context=16",
         f"text:{tmp_path}/corpus;tokenizer={tmp_path}/tok.json;context=16"),
        ("digits-rot90", "digits-rot90"),
        ("sets/mine.npz", f"{tmp_path}/sets/mine.npz"),
    ]:
        path = tmp_path / "plan.json"
        path.write_text(json.dumps({"base": "b.safetensors", "zoo": {}, "data": data,
                                    "steps": []}))
        assert load_plan(path).data == expected, data
    plan = AssemblyPlan("b", {}, data="text:corpus/enc.txt;context=32")
    resolved = plan.resolve_paths(tmp_path)
    assert load_dataset(resolved.data).text is not None  # it loads, wherever we run from
