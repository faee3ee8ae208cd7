"""Layer steps on transposed and tiled weight layouts (issue 8).

GPT-2's Conv1D stores its weight (in, out); a fused QKV projection's output axis is 3 tiles of
heads x head dims; an LSTM / GRU stacks 4 / 3 gate rows per hidden unit, and its recurrent
weight has the hidden units on both axes; a position-major flatten makes the classifier's
input axis one tile per image row. A layer step (``--layers``, plan steps) merges such a layer from a donor of
the same layout: from a permuted copy the aligned curve is flat (barrier < 1e-4 at lambda 0, 0.5
and 1), lambda 0 returns the base bit for bit, lambda 1 the base's function; from a wider or
narrower copy with a planted unit map, chain and local alignment recover >= 95 % of it; a pair
no unit map can line up is refused in one line naming both layers and the reason.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mal_desktop.core.align.generalized import Match
from mal_desktop.core.errors import PlanError
from mal_desktop.core.evaluate.metrics import barrier
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.spec import PermutationSpec
from mal_desktop.core.graph.tree import build_layer_tree
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.jobs import ModelCache, curve_series
from mal_desktop.core.merge.assemble import align_step, check_step_fits, step_tensors
from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.core.merge.preflight import check_step
from mal_desktop.core.progress import run_job

sys.path.insert(0, str(Path(__file__).parent))  # tests/core is not a package
import layout_arch as la  # noqa: E402
from planted import planted_space_sources  # noqa: E402

LAMBDAS = (0.0, 0.5, 1.0)


def loaded(module: nn.Module, seed: int = 0) -> LoadedModel:
    """The module with non-trivial biases (a wrong map must show), in eval mode; images for
    the position-major CNN, else sequences."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    shape = (1, 8, 8) if isinstance(module, la.im.PosMajorCNN) else (la.SEQ, la.FEATURES)
    return LoadedModel(module=module.eval(), arch={"kind": "memory"}, input_shape=shape,
                       num_classes=la.CLASSES)


def _entry_sources(size: int, units_source: list[int], m: int, block: int, tiles: int
                   ) -> torch.Tensor:
    """Per entry of a donor axis (tiles x units x block), the base entry it copies, or -1."""
    n = len(units_source)
    e = torch.arange(size)
    tile, unit, off = e // (n * block), (e % (n * block)) // block, e % block
    src = torch.tensor(units_source)[unit]
    return torch.where(src >= 0, tile * (m * block) + src * block + off, torch.full_like(e, -1))


def plant(base: LoadedModel, base_spec: PermutationSpec, donor: LoadedModel,
          donor_spec: PermutationSpec, seed: int, noise: float = 0.0
          ) -> tuple[LoadedModel, dict[str, list[int]]]:
    """The donor with the base's units planted: per free space, a random generalized map
    (a permutation where the widths agree; attention heads whole, their dims permuted inside
    where the model allows); the donor's own values stay on new units.

    Returns (donor model, space -> per donor unit the base unit it copies or -1)."""
    gen = torch.Generator().manual_seed(seed)
    sources = planted_space_sources(base_spec, donor_spec, gen)
    b_state, state = base.state(), {}
    for key, t in donor.state().items():
        b = b_state[key]
        index, valid = [], torch.ones((), dtype=torch.bool)
        for dim, axis in enumerate(donor_spec.axes.get(key, (None,) * t.dim())):
            if axis is None:
                src = torch.arange(t.shape[dim])
            else:
                src = _entry_sources(t.shape[dim], sources[axis.space],
                                     base_spec.spaces[axis.space].size, axis.block, axis.tiles)
            view = [1] * t.dim()
            view[dim] = -1
            index.append(src.clamp(min=0).view(view))
            valid = valid & (src >= 0).view(view)
        planted = b[tuple(index)] if t.dim() else b
        new = torch.where(valid, planted, t) if t.is_floating_point() else t
        if t.is_floating_point() and noise:
            new = new + noise * new.std() * torch.randn(new.shape, generator=gen)
        state[key] = new.contiguous()
    return donor.with_state(state), sources


def recovered(match: Match, source: list[int]) -> float:
    truth = {(s, j) for j, s in enumerate(source) if s >= 0}
    return len(truth & set(zip(match.rows, match.cols))) / len(truth)


def outputs(model: LoadedModel, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The model's outputs on ``x`` with its weights replaced by ``state`` (every key)."""
    assert set(state) == set(model.state())
    with torch.no_grad():
        return torch.func.functional_call(model.module, state, (x,), tie_weights=False)


# (model, layer): transposed Conv1D layers, a fused QKV projection and the layer reading heads
PERMUTED = {
    "conv1d-c_fc": (lambda: la.Conv1DNet(), "c_fc"),
    "conv1d-c_proj": (lambda: la.Conv1DNet(), "c_proj"),
    "qkv-qkv": (lambda: la.QKVNet(3, 4), "qkv"),
    "qkv-proj": (lambda: la.QKVNet(3, 4), "proj"),
    "lstm-rnn": (lambda: la.RNNNet("lstm"), "rnn"),
    "gru-rnn": (lambda: la.RNNNet("gru"), "rnn"),
    "bilstm-l0": (lambda: la.im.LSTMNet("lstm", 2, True), "rnn.l0"),
    "bilstm-l1": (lambda: la.im.LSTMNet("lstm", 2, True), "rnn.l1"),
    "position-major-fc": (lambda: la.im.PosMajorCNN(), "fc"),  # input: 4 tiles of 5 x 4
}


@pytest.mark.parametrize("align", ["chain", "local"])
@pytest.mark.parametrize("case", list(PERMUTED))
def test_layer_step_from_a_permuted_copy_is_flat(case: str, align: str) -> None:
    make, layer = PERMUTED[case]
    torch.manual_seed(0)
    base = loaded(make())
    spec = discover_spec(base)
    donor, _ = plant(base, spec, base.with_state(base.state()), spec, seed=3)
    flat_curve(base, spec, donor, spec, layer, layer, align)


def flat_curve(base: LoadedModel, base_spec: PermutationSpec, donor: LoadedModel,
               donor_spec: PermutationSpec, source_layer: str, base_layer: str,
               align: str) -> None:
    """The aligned per-step curve of a permuted copy: lambda 0 is the base bit for bit, every
    lambda computes the base's function (barrier < 1e-4), and the naive curve does not."""
    cache = ModelCache({"base": base, "target": donor},
                       specs={"base": base_spec, "target": donor_spec})
    series = curve_series(cache, "base", "target", align=align,
                          layers=[(source_layer, base_layer)])
    assert series.align == align and not series.note
    b_state = base.state()
    at0 = series.aligned(0.0)
    assert all(at0[k] is v or torch.equal(at0[k], v) for k, v in b_state.items())
    x = base.example_input(16, seed=1)
    ref = outputs(base, b_state, x)
    labels = ref.argmax(-1)

    def losses(state_at) -> list[float]:
        return [float(F.cross_entropy(outputs(base, state_at(lam), x), labels)) for lam in LAMBDAS]

    aligned = losses(series.aligned)
    assert barrier(list(LAMBDAS), aligned) < 1e-4, aligned
    assert torch.allclose(outputs(base, series.aligned(1.0), x), ref, atol=1e-5)
    # the test has power: merged without alignment, the same layer changes the function
    assert not torch.allclose(outputs(base, series.naive(1.0), x), ref, atol=1e-3)


def test_a_conv1d_donor_merges_into_a_linear_base_and_back() -> None:
    """Orientation alone never matters: GPT-2's Conv1D (in, out) and nn.Linear (out, in) are
    the same layer stored two ways; a permuted copy written the other way realigns."""
    torch.manual_seed(0)
    conv = loaded(la.Conv1DNet())
    linear = la.Conv1DNet(linear=True)
    state = {k: (v.T.contiguous() if k in ("c_fc.weight", "c_proj.weight") else v)
             for k, v in conv.state().items()}
    linear.load_state_dict(state)
    linear = LoadedModel(module=linear.eval(), arch={"kind": "memory"},
                         input_shape=(la.SEQ, la.FEATURES), num_classes=la.CLASSES)
    conv_spec, linear_spec = discover_spec(conv), discover_spec(linear)
    assert conv_spec.layer("c_fc").transposed and not linear_spec.layer("c_fc").transposed
    for base, b_spec, other, o_spec in ((conv, conv_spec, linear, linear_spec),
                                        (linear, linear_spec, conv, conv_spec)):
        donor, _ = plant(other, o_spec, other.with_state(other.state()), o_spec, seed=4)
        for align in ("chain", "local"):
            flat_curve(base, b_spec, donor, o_spec, "c_fc", "c_fc", align)


# (base module, donor module, layer, the space on the layer's output side)
WIDTHS = {
    "conv1d-narrower": (lambda: la.Conv1DNet(48, 32), lambda: la.Conv1DNet(64, 32), "c_fc",
                        "P_c_fc"),
    "conv1d-wider": (lambda: la.Conv1DNet(48, 32), lambda: la.Conv1DNet(32, 32), "c_fc",
                     "P_c_fc"),
    "qkv-narrower": (lambda: la.QKVNet(6, 4, 32), lambda: la.QKVNet(8, 4, 32), "qkv",
                     "P_heads_qkv"),
    "qkv-wider": (lambda: la.QKVNet(6, 4, 32), lambda: la.QKVNet(4, 4, 32), "qkv",
                  "P_heads_qkv"),
    "lstm-narrower": (lambda: la.RNNNet("lstm", 24), lambda: la.RNNNet("lstm", 32), "rnn",
                      "P_rnn"),
    "lstm-wider": (lambda: la.RNNNet("lstm", 24), lambda: la.RNNNet("lstm", 16), "rnn", "P_rnn"),
    "gru-narrower": (lambda: la.RNNNet("gru", 24), lambda: la.RNNNet("gru", 32), "rnn", "P_rnn"),
    "gru-wider": (lambda: la.RNNNet("gru", 24), lambda: la.RNNNet("gru", 16), "rnn", "P_rnn"),
}


@pytest.mark.parametrize("align", ["chain", "local"])
@pytest.mark.parametrize("case", list(WIDTHS))
def test_planted_map_recovered_across_widths(case: str, align: str) -> None:
    make_base, make_donor, layer, out_space = WIDTHS[case]
    torch.manual_seed(0)
    base, donor = loaded(make_base(), seed=0), loaded(make_donor(), seed=1)
    b_spec, d_spec = discover_spec(base), discover_spec(donor)
    donor, sources = plant(base, b_spec, donor, d_spec, seed=5, noise=0.01)
    in_space = b_spec.layer(layer).in_axis.space
    step = AssemblyStep("donor", layer, layer, 1.0, align)
    check_step_fits(step, base.state(), b_spec, donor.state(), d_spec, "test")
    result = run_job(align_step(step, base.state(), b_spec, donor.state(), d_spec))
    assert result.align == align and not result.note
    assert result.out.case == case.split("-")[1]
    out_rate = recovered(result.out, sources[out_space])
    in_rate = recovered(result.inp, sources[in_space])
    assert out_rate >= 0.95 and in_rate >= 0.95, (out_rate, in_rate)
    # and the merged layer is the base's where units were planted
    merged = curve_series(ModelCache({"base": base, "target": donor},
                                     specs={"base": b_spec, "target": d_spec}),
                          "base", "target", align=align, layers=[(layer, layer)]).aligned(1.0)
    # every tensor of the layer is rewritten: for a recurrent layer also its hidden weight and
    # bias, which move with the hidden units
    rewritten, _ = step_tensors(step, b_spec, d_spec)
    b_state = base.state()
    assert all(merged[k].shape == b_state[k].shape and not torch.equal(merged[k], b_state[k])
               for k in rewritten)
    if layer == "rnn":
        assert {"rnn.weight_hh_l0", "rnn.bias_hh_l0", "rnn.bias_ih_l0"} <= set(rewritten)


def test_incompatible_layouts_are_refused_naming_both_layers() -> None:
    """A transposed Conv1D donor (one copy of its units) cannot merge into a fused QKV
    projection (3 stacked copies); the GUI's fit check and the assembly say so in one line."""
    torch.manual_seed(0)
    conv, qkv = loaded(la.Conv1DNet(12, 8)), loaded(la.QKVNet(3, 4))
    conv_tree, qkv_tree = build_layer_tree(conv, stats=False), build_layer_tree(qkv, stats=False)
    verdict = check_step(qkv_tree, conv_tree, "c_fc", "qkv")
    assert not verdict.ok and "\n" not in verdict.reason
    assert "c_fc" in verdict.reason and "qkv" in verdict.reason
    assert "3 stacked copies" in verdict.reason and "stored in, out" in verdict.reason
    with pytest.raises(PlanError, match="cannot merge c_fc into qkv: their output layouts"):
        check_step_fits(AssemblyStep("conv", "c_fc", "qkv"), qkv.state(), qkv_tree.spec,
                        conv.state(), conv_tree.spec, "step 1")
    # the layouts the layer steps now merge are accepted by the same fit check
    assert check_step(conv_tree, conv_tree, "c_fc", "c_fc").ok
    assert check_step(qkv_tree, qkv_tree, "qkv", "qkv").ok
    assert check_step(qkv_tree, qkv_tree, "proj", "proj").ok
    other_heads = build_layer_tree(loaded(la.QKVNet(3, 2, 6)), stats=False)
    verdict = check_step(qkv_tree, other_heads, "qkv", "qkv")
    assert not verdict.ok and "2 rows per unit" in verdict.reason, verdict.reason


def test_a_step_says_what_its_units_are_where_a_unit_is_more_than_a_row() -> None:
    """A query projection of 128 rows read 'out: equal 4' (its heads move as blocks): the
    check now says what a unit is, and says nothing for plain layers."""
    torch.manual_seed(0)
    qkv = build_layer_tree(loaded(la.QKVNet(3, 4)), stats=False)
    lstm = build_layer_tree(loaded(la.RNNNet("lstm")), stats=False)
    conv = build_layer_tree(loaded(la.Conv1DNet(12, 8)), stats=False)
    for tree, layer in ((qkv, "qkv"), (lstm, "rnn")):
        check = check_step(tree, tree, layer, layer)
        out = check.units.split("; ")[0]
        assert check.ok and out.startswith("out: ") and " units" in out, check
        rows, _, split = out[len("out: "):].partition(" rows = ")
        parts = split.replace(" units", "").replace(" of ", " x ").split(" x ")
        assert int(rows) == torch.tensor([int(p) for p in parts]).prod(), check.units
    assert check_step(conv, conv, "c_fc", "c_fc").units == ""  # one row per unit: nothing to say


def test_recurrent_layers_refuse_other_gates_and_directions() -> None:
    torch.manual_seed(0)
    trees = {name: build_layer_tree(loaded(m), stats=False) for name, m in (
        ("lstm", la.RNNNet("lstm")), ("gru", la.RNNNet("gru")), ("wide", la.RNNNet("lstm", 9)),
        ("bi", la.im.LSTMNet("lstm", 1, True)))}
    assert check_step(trees["lstm"], trees["wide"], "rnn", "rnn").ok  # other width: fine
    verdict = check_step(trees["lstm"], trees["gru"], "rnn", "rnn")
    assert not verdict.ok and verdict.reason == \
        "cannot merge a gru layer into a lstm layer (rnn -> rnn)"
    verdict = check_step(trees["lstm"], trees["bi"], "rnn", "rnn")
    assert not verdict.ok and "rnn is bidirectional, rnn runs one way" in verdict.reason
    verdict = check_step(trees["lstm"], trees["lstm"], "fc", "rnn")
    assert not verdict.ok and "linear layer into a lstm layer (fc -> rnn)" in verdict.reason


# ----- transformers GPT-2 (optional [hf] extra) --------------------------------------------

class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x).logits[:, -1]


@pytest.mark.parametrize("layer", ["model.transformer.h.0.attn.c_attn",
                                   "model.transformer.h.0.mlp.c_fc"])
def test_gpt2_layer_steps_realign(layer: str) -> None:
    tf = pytest.importorskip("transformers")
    tf.logging.set_verbosity_error()
    cfg = tf.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = Logits(tf.GPT2LMHeadModel(cfg))
    base = loaded(module)
    base = LoadedModel(module=base.module, arch={"kind": "memory"}, input_shape=(6,),
                       num_classes=40, input_dtype=torch.int64, input_range=40)
    spec = discover_spec(base)
    assert spec.layer(layer).transposed
    donor, _ = plant(base, spec, base.with_state(base.state()), spec, seed=3)
    for align in ("chain", "local"):
        flat_curve(base, spec, donor, spec, layer, layer, align)


# ----- the command line ----------------------------------------------------------------------

def test_cli_curve_and_assemble_with_conv1d_qkv_and_lstm_steps(tmp_path, monkeypatch, capsys) -> None:
    from mal_desktop.cli import main
    from mal_desktop.core.io.files import load_model
    from mal_desktop.core.merge.plan import AssemblyPlan

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    gen = torch.Generator().manual_seed(0)
    data = tmp_path / "data.npz"
    import numpy as np
    np.savez(data, x=torch.randn(32, la.SEQ, la.FEATURES, generator=gen).numpy(),
             y=torch.randint(0, la.CLASSES, (32,), generator=gen).numpy())
    for factory, layers in (("make_conv1d", ["c_fc:c_fc", "c_proj:c_proj"]),
                            ("make_qkv", ["qkv:qkv"]), ("make_lstm", ["rnn:rnn"])):
        torch.manual_seed(0)
        base = loaded(getattr(la, factory)())
        spec = discover_spec(base)
        donor, _ = plant(base, spec, base.with_state(base.state()), spec, seed=3)
        paths = {}
        for name, m in (("base", base), ("donor", donor)):
            paths[name] = tmp_path / f"{factory}-{name}.pt"
            torch.save(m.state(), paths[name])
        arch = f"layout_arch:{factory}"
        capsys.readouterr()
        code = main(["curve", "--base", str(paths["base"]), "--target", str(paths["donor"]),
                     "--data", str(data), "--grid", "3", "--layers", *layers, "--arch", arch,
                     "--json", "--quiet"])
        out, err = capsys.readouterr()
        assert code == 0, err
        curve = json.loads(out)
        assert curve["aligned"]["barrier"] < 1e-4
        loss = curve["aligned"]["loss"]
        assert max(loss) - min(loss) < 1e-4
        plan = AssemblyPlan(base=str(paths["base"]), zoo={"donor": str(paths["donor"])},
                            steps=[AssemblyStep("donor", *pair.split(":"), 1.0)
                                   for pair in layers])
        plan_path = tmp_path / f"{factory}-plan.json"
        plan_path.write_text(json.dumps(plan.to_json()))
        merged_path = tmp_path / f"{factory}-merged.safetensors"
        code = main(["assemble", str(plan_path), "--out", str(merged_path), "--arch", arch,
                     "--json", "--quiet"])
        out, err = capsys.readouterr()
        assert code == 0, err
        merged = load_model(merged_path, arch).state()
        for key, value in base.state().items():
            assert torch.allclose(merged[key], value, atol=1e-6), key
