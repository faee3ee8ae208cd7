"""Assembly of real zoo models: lambda 0 is the base bit for bit, several donors, provenance,
and every bad input is a clear error with nothing written (issue 2, items 1 and 5)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mal_desktop.core.errors import MalError, PlanError
from mal_desktop.core.io.files import file_sha256, load_model, save_model
from mal_desktop.core.jobs import assemble_job
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.core.progress import CancelToken, Cancelled, run_job


def _paths(zoo):
    return {name: str(zoo.path_of(name)) for name in zoo.names()}


def _plan(zoo, steps, base="mlp-w32-s0") -> AssemblyPlan:
    p = _paths(zoo)
    return AssemblyPlan(base=p[base], zoo={k: v for k, v in p.items() if k != base},
                        steps=list(steps))


def test_lambda_zero_returns_the_base_bit_for_bit(small_zoo, tmp_path):
    plan = _plan(small_zoo, [AssemblyStep("mlp-w64-s0", "layers.0", "layers.0", 0.0, "chain"),
                             AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.0, "local")])
    result = run_job(assemble_job(plan, out=tmp_path / "m.safetensors"))
    base = load_model(plan.base).state()
    merged = load_model(tmp_path / "m.safetensors").state()
    assert base.keys() == merged.keys()
    for key in base:
        assert torch.equal(base[key], merged[key]), key
    assert len(result.steps) == 2


def test_several_donors_keep_the_base_architecture_and_record_provenance(small_zoo, tmp_path):
    # base 32 wide; donors 64 wide (base narrower: drop 32) and 32 wide from another seed
    plan = _plan(small_zoo, [
        AssemblyStep("mlp-w64-s0", "layers.0", "layers.0", 0.3, "chain"),
        AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.4, "local", "keep"),
        AssemblyStep("mlp-w64-s0", "head", "head", 0.2, "none"),
    ])
    before = {p: file_sha256(p) for p in [plan.base, *plan.zoo.values()]}
    out = tmp_path / "merged.safetensors"
    events = []
    result = run_job(assemble_job(plan, out=out), events.append)
    assert result.out == out and out.exists()
    merged, base = load_model(out), load_model(plan.base)
    assert {k: v.shape for k, v in merged.state().items()} == \
        {k: v.shape for k, v in base.state().items()}
    assert merged.metadata["plan"]["steps"][1]["unmatched"] == "keep"
    assert set(merged.metadata["inputs_sha256"]) == set(before)
    # the base's own accuracy must not pass for the merged model's
    assert "test_accuracy" not in merged.metadata
    assert merged.metadata["base_provenance"]["test_accuracy"] == base.metadata["test_accuracy"]
    first = result.steps[0]
    assert first.out.case == "narrower" and first.out.dropped == 32 and first.out.matched == 32
    assert first.inp.case == "fixed"  # the network input never moves
    assert "base narrower 32 <- 64 (drop 32)" in first.case_text
    assert all(b >= a - 1e-9 for a, b in zip(first.objective, first.objective[1:]))
    assert result.steps[2].out.case == "fixed"
    diag = [e.payload for e in events if e.payload is not None and hasattr(e.payload, "case_text")]
    assert len(diag) == 3 and diag[0].out_matrix.shape == (32, 64)
    # input model files were not touched
    assert before == {p: file_sha256(p) for p in before}
    # the merged model changed exactly the planned layers
    changed = {k for k in base.state() if not torch.equal(base.state()[k], merged.state()[k])}
    assert changed == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                       "head.weight", "head.bias"}


def test_base_wider_zero_pads_and_unmatched_policy(small_zoo):
    # base 64 wide, donor 32 wide: 32 base units have no partner
    plan = _plan(small_zoo, [AssemblyStep("mlp-w32-s0", "layers.1", "layers.1", 0.5, "local",
                                          "zero")], base="mlp-w64-s0")
    zero = run_job(assemble_job(plan)).model.state()
    keep_plan = _plan(small_zoo, [AssemblyStep("mlp-w32-s0", "layers.1", "layers.1", 0.5, "local",
                                               "keep")], base="mlp-w64-s0")
    result = run_job(assemble_job(keep_plan))
    keep = result.model.state()
    base = load_model(plan.base).state()["layers.1.weight"]
    assert result.steps[0].out.case == "wider" and result.steps[0].out.padded == 32
    # "zero": an unpaired base slot is scaled by (1 - lambda); "keep": left as it was.
    # Exactly 64 - 32 = 32 rows of layers.1 have no partner (base 64 slots <- donor 32 units).
    # Each of the other 32 rows took a donor unit, so its matched columns moved by 0.5 * donor
    # weight: a row counted here beyond 32 would be a paired slot the merge left untouched.
    diff_zero = zero["layers.1.weight"] - 0.5 * base
    unpaired_zero = (diff_zero.abs() < 1e-7).all(dim=1)
    unpaired_keep = (keep["layers.1.weight"] == base).all(dim=1)
    assert int(unpaired_zero.sum()) == 64 - 32 and int(unpaired_keep.sum()) == 64 - 32
    # and they are the same slots under both policies: the ones the alignment left empty
    assert torch.equal(unpaired_zero, unpaired_keep)


@pytest.mark.parametrize("align", ["local", "chain"])
def test_alignment_progress_names_its_step(small_zoo, align):
    """Every alignment line says which step it belongs to: a plan's step can align for minutes
    at LLM widths, and "round 3: J = ..." alone does not say where the plan is."""
    plan = _plan(small_zoo, [AssemblyStep("mlp-w32-s1", "layers.0", "layers.0", 0.5, align),
                             AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.5, align)])
    events = []
    run_job(assemble_job(plan), events.append)
    rounds = [e.message for e in events if "J = " in e.message]
    assert rounds and all(m.startswith(("step 1/2: ", "step 2/2: ")) for m in rounds), rounds


def test_conv_steps_and_batchnorm_follow(small_zoo, tmp_path):
    p = _paths(small_zoo)
    plan = AssemblyPlan(base=p["cnn-w8-s0"], zoo={"r": p["resnet-w8-s0"]},
                        steps=[AssemblyStep("r", "blocks.0.conv1", "features.2.0", 0.5, "local")])
    result = run_job(assemble_job(plan, out=tmp_path / "c.safetensors"))
    base, merged = load_model(plan.base).state(), result.model.state()
    assert not torch.equal(base["features.2.0.weight"], merged["features.2.0.weight"])
    assert not torch.equal(base["features.2.1.weight"], merged["features.2.1.weight"])  # BN rides
    assert torch.equal(base["features.0.0.weight"], merged["features.0.0.weight"])


@pytest.mark.parametrize("step, message", [
    (AssemblyStep("mlp-w64-s0", "layers.7", "layers.0", 0.5), "no layer 'layers.7'"),
    (AssemblyStep("mlp-w64-s0", "layers.0", "nowhere", 0.5), "no layer 'nowhere'"),
    (AssemblyStep("cnn-w8-s0", "features.0.0", "layers.0", 0.5), "cannot merge a 4-axis weight"),
])
def test_bad_steps_are_refused_before_loading_and_nothing_is_written(small_zoo, tmp_path,
                                                                     step, message):
    plan = _plan(small_zoo, [step])
    out = tmp_path / "never.safetensors"
    with pytest.raises(PlanError, match=message):
        run_job(assemble_job(plan, out=out))
    assert os.listdir(tmp_path) == []


def test_incompatible_kernel_sizes_are_refused(small_zoo, tmp_path):
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.core.arch.families import build_model, full_config

    cfg = full_config("cnn", {"channels": [8, 16], "hidden": 32, "kernel": 5})
    k5 = tmp_path / "k5.safetensors"
    save_model(LoadedModel(build_model("cnn", cfg), {"kind": "family", "family": "cnn",
                                                     "config": cfg}, (1, 8, 8), 10), k5)
    plan = AssemblyPlan(base=str(small_zoo.path_of("cnn-w8-s0")), zoo={"k5": str(k5)},
                        steps=[AssemblyStep("k5", "features.0.0", "features.0.0", 0.5)])
    with pytest.raises(PlanError, match="kernel 5x5 cannot merge into kernel 3x3"):
        run_job(assemble_job(plan, out=tmp_path / "out.safetensors"))
    assert not (tmp_path / "out.safetensors").exists()


def test_class_output_mismatch_is_refused(small_zoo, tmp_path):
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.core.arch.families import build_model, full_config

    cfg = full_config("mlp", {"widths": [32, 32], "num_classes": 5})
    five = tmp_path / "five.safetensors"
    save_model(LoadedModel(build_model("mlp", cfg), {"kind": "family", "family": "mlp",
                                                     "config": cfg}, (1, 8, 8), 5), five)
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")), zoo={"five": str(five)},
                        steps=[AssemblyStep("five", "head", "head", 0.5)])
    with pytest.raises(PlanError, match="class outputs"):
        run_job(assemble_job(plan))


@pytest.mark.parametrize("source_layer, base_layer, message", [
    # class outputs onto a hidden layer, and the hidden layer onto the class outputs
    ("head", "layers.1", "head writes its model's class outputs; they cannot merge into layers.1"),
    ("layers.1", "head", "head writes the class outputs"),
    # the network input's reader onto a hidden layer, and the reverse
    ("layers.0", "layers.1", "layers.0 reads its model's network input; it cannot merge into "
                             "layers.1"),
    ("layers.1", "layers.0", "layers.0 reads the network input"),
])
def test_layer_roles_are_checked_in_both_directions(small_zoo, tmp_path, source_layer,
                                                    base_layer, message):
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"twin": str(small_zoo.path_of("mlp-w32-s1"))},
                        steps=[AssemblyStep("twin", source_layer, base_layer, 0.5)])
    with pytest.raises(PlanError, match=message):
        run_job(assemble_job(plan, out=tmp_path / "out.safetensors"))
    assert list(tmp_path.iterdir()) == []


def test_nan_donor_is_refused_and_nothing_written(small_zoo, tmp_path):
    donor = load_model(small_zoo.path_of("mlp-w32-s1"))
    state = donor.state()
    state["layers.0.weight"] = state["layers.0.weight"].clone()
    state["layers.0.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    # write around save_model's own checks: a NaN file can come from anywhere
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad),
              metadata=_raw_metadata(small_zoo.path_of("mlp-w32-s1")))
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")), zoo={"nan": str(bad)},
                        steps=[AssemblyStep("nan", "layers.0", "layers.0", 0.5)])
    out = tmp_path / "out.safetensors"
    with pytest.raises(MalError, match="NaN"):
        run_job(assemble_job(plan, out=out))
    assert not out.exists()


def _raw_metadata(path) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata())


def test_output_over_an_input_is_refused(small_zoo):
    plan = _plan(small_zoo, [AssemblyStep("mlp-w32-s1", "layers.0", "layers.0", 0.5)])
    sha = file_sha256(plan.base)
    with pytest.raises(PlanError, match="refusing to overwrite an input"):
        run_job(assemble_job(plan, out=plan.base))
    assert file_sha256(plan.base) == sha


def test_cancel_mid_run_leaves_no_file(small_zoo, tmp_path):
    plan = _plan(small_zoo, [AssemblyStep("mlp-w64-s0", "layers.0", "layers.0", 0.5),
                             AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.5)])
    token = CancelToken()
    out = tmp_path / "m.safetensors"

    def on_event(event):
        if event.stage == "align" and event.payload is not None:
            token.cancel()  # right after the first step finished

    with pytest.raises(Cancelled):
        run_job(assemble_job(plan, token, out=out), on_event)
    assert os.listdir(tmp_path) == []


def test_plan_json_uses_the_documented_keys(small_zoo):
    plan = _plan(small_zoo, [AssemblyStep("mlp-w64-s0", "layers.0", "layers.0", 0.25, "local")])
    d = json.loads(json.dumps(plan.to_json()))
    assert d["steps"][0] == {"source": "mlp-w64-s0", "source_layer": "layers.0",
                             "base_layer": "layers.0", "lambda": 0.25, "align": "local",
                             "unmatched": "zero", "method": "linear"}


def test_models_held_in_memory_need_no_file(small_zoo):
    """The GUI hands over loaded models; one made in memory has no file to read a header from."""
    base_path = str(small_zoo.path_of("mlp-w32-s0"))
    donor = load_model(small_zoo.path_of("mlp-w64-s0"))
    in_memory = donor.with_state(donor.state())  # a copy with no path, like an unsaved merge
    plan = AssemblyPlan(base=base_path, zoo={"mem": "memory:wide"},
                        steps=[AssemblyStep("mem", "layers.1", "layers.1", 0.5)])
    result = run_job(assemble_job(plan, models={"memory:wide": in_memory}))
    assert result.model.metadata["inputs_sha256"]["memory:wide"] is None
    assert result.steps[0].out.dropped == 32


def test_chain_alignment_recovers_permuted_copies_of_a_trained_mixer():
    """mal_method.md section 9 on the hardest family: coordinate descent over a residual stream
    has local optima (one permuted copy in eight was missed before seeded restarts and the
    stream's LayerNorms joined the objective)."""
    from mal_desktop.core.evaluate.datasets import load_dataset
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.spec import permute_state
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.core.merge.assemble import align_step
    from mal_desktop.core.arch.families import build_model, full_config
    from mal_desktop.core.zoo.train import train_job

    torch.manual_seed(0)
    cfg = full_config("mixer")
    module = build_model("mixer", cfg)
    run_job(train_job(module, load_dataset("digits"), epochs=5, seed=0))
    base = LoadedModel(module, {"kind": "family", "family": "mixer", "config": cfg}, (1, 8, 8), 10)
    spec, state = discover_spec(base), base.state()
    layer = "blocks.1.channel_fc2"
    step = AssemblyStep("copy", layer, layer, 1.0, "chain")
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        perms = {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}
        alignment = run_job(align_step(step, state, spec, permute_state(state, spec, perms), spec))
        for space, match in ((spec.layer(layer).out_axis.space, alignment.out),
                             (spec.layer(layer).in_axis.space, alignment.inp)):
            assert torch.equal(torch.tensor(match.cols), torch.argsort(perms[space])), seed


@pytest.mark.parametrize("family, layer", [("mixer", "blocks.1.channel_fc2"),
                                           ("resnet", "blocks.1.conv2"), ("cnn", "fc")])
def test_chain_step_from_a_permuted_copy_reproduces_the_base(tmp_path, family, layer):
    """mal_method.md section 9: aligning to a permuted copy recovers the permutation, so merging
    the copy's layer at lambda 1 (chain alignment over the prefix) changes nothing."""
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.graph.spec import permute_state
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.core.arch.families import build_model, full_config

    torch.manual_seed(0)
    cfg = full_config(family)
    base = LoadedModel(build_model(family, cfg), {"kind": "family", "family": family,
                                                  "config": cfg}, (1, 8, 8), 10)
    spec = discover_spec(base)
    gen = torch.Generator().manual_seed(1)
    perms = {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}
    save_model(base, tmp_path / "base.safetensors")
    save_model(base.with_state(permute_state(base.state(), spec, perms)), tmp_path / "perm.safetensors")
    plan = AssemblyPlan(base=str(tmp_path / "base.safetensors"),
                        zoo={"perm": str(tmp_path / "perm.safetensors")},
                        steps=[AssemblyStep("perm", layer, layer, 1.0, "chain")])
    merged = run_job(assemble_job(plan)).model
    x = base.example_input(16)
    with torch.no_grad():
        assert torch.allclose(merged.module(x), base.module(x), atol=1e-4)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0)])
def test_steps_of_one_donor_share_one_chain_solve(small_zoo, order):
    # A model merged layer by layer: layers.0 writes the space layers.1 reads, and so on. Each
    # space must get one map in every step that touches it, and the prefix is solved once.
    layers = ["layers.0", "layers.1", "head"]
    steps = [AssemblyStep("mlp-w32-s1", layers[i], layers[i], 0.5, "chain") for i in order]
    events = []
    result = run_job(assemble_job(_plan(small_zoo, steps)), events.append)
    first_sweeps = [e for e in events if isinstance(e.payload, dict)
                    and e.payload.get("restart") == 0 and e.payload.get("sweep") == 1]
    assert len(first_sweeps) == 1  # one descent (its restarts) for all three steps
    by_layer = {layers[i]: diag for i, diag in zip(order, result.steps)}
    for writer, reader in (("layers.0", "layers.1"), ("layers.1", "head")):
        assert (by_layer[writer].out_matrix == by_layer[reader].in_matrix).all()
    assert by_layer["layers.1"].out_matrix.sum() == 32  # a real map, not an empty one
    assert all("one chain solve through head serves 3 steps" in d.note for d in result.steps)
    assert all(not d.fallback for d in result.steps)


def test_a_chain_over_the_memory_bound_from_its_first_layer_falls_back_to_local(small_zoo,
                                                                                 monkeypatch):
    # every layer of the model merged from one donor: no later start shrinks the chain
    from mal_desktop.core.merge import chains

    monkeypatch.setattr(chains, "CHAIN_WORKING_BYTES", 1)
    steps = [AssemblyStep("mlp-w32-s1", name, name, 0.5, "chain")
             for name in ("layers.0", "layers.1", "head")]
    result = run_job(assemble_job(_plan(small_zoo, steps)))
    for diag in result.steps:
        assert diag.align == "local" and diag.fallback
        assert "chain alignment not applicable (its float32 working copies" in diag.note
        assert "over the limit" in diag.note and "used local alignment" in diag.note


def test_a_dataset_the_base_cannot_read_is_refused_before_any_alignment(small_zoo,
                                                                        monkeypatch):
    """Text for an image model (or images for a language model) used to be found when the
    result was scored, after minutes of alignment at real sizes."""
    from mal_desktop.core import jobs
    from mal_desktop.core.errors import DatasetError

    def no_alignment(*args, **kwargs):
        raise AssertionError("aligned before checking the dataset")

    monkeypatch.setattr(jobs, "align_step", no_alignment)
    plan = _plan(small_zoo, [AssemblyStep("mlp-w32-s1", "layers.0", "layers.0", 0.5)])
    plan.data = "python-code"
    with pytest.raises(DatasetError, match="reads images or features, not token ids"):
        run_job(assemble_job(plan))
    with pytest.raises(DatasetError, match="reads images or features, not token ids"):
        run_job(jobs.plan_curve_job(plan, 0, "python-code"))
    with pytest.raises(DatasetError, match="reads images or features, not token ids"):
        run_job(jobs.model_curve_job(plan.base, plan.zoo["mlp-w32-s1"], "python-code",
                                     layers=[("layers.0", "layers.0")]))


def test_a_plan_curve_says_what_its_step_itself_does(small_zoo):
    from mal_desktop.core.jobs import plan_curve_job

    plan = _plan(small_zoo, [AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.5, "none")])
    curve = run_job(plan_curve_job(plan, 0, "digits", grid=3))
    # the aligned line is chain alignment, drawn for comparison with the step's naive merge
    assert (curve.alignment["step_align"], curve.alignment["align"]) == ("none", "chain")
