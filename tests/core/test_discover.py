"""Permutation-space discovery and its self-test (mal_method.md section 9)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mal_desktop.core.errors import AlignmentError
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.selftest import pad_space, self_test
from mal_desktop.core.graph.spec import PermutationSpec
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.arch.families import build_model, full_config

SMALL = {
    "mlp": {"widths": [12, 10]},
    "cnn": {"channels": [4, 6], "hidden": 8},
    "vgg": {"stages": [[4, 4], [6]]},
    "resnet": {"width": 6, "blocks": 2},
    "mixer": {"dim": 8, "depth": 2, "token_hidden": 6, "channel_hidden": 10},
}
MIN_FREE = {"mlp": 2, "cnn": 3, "vgg": 3, "resnet": 3, "mixer": 5}


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm parameters and statistics, so a wrongly permuted one changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return module.eval()


def family_model(family: str, **overrides: object) -> LoadedModel:
    torch.manual_seed(0)
    cfg = full_config(family, {**SMALL[family], **overrides})
    module = randomize(build_model(family, cfg))
    return LoadedModel(module=module, arch={"kind": "family", "family": family, "config": cfg},
                       input_shape=tuple(cfg["input_shape"]), num_classes=cfg["num_classes"])


def custom_model(module: nn.Module, input_shape: tuple[int, ...]) -> LoadedModel:
    return LoadedModel(module=randomize(module), arch={"kind": "memory"}, input_shape=input_shape,
                       num_classes=0)


def pt2_round_trip(model: LoadedModel, tmp_path, decompose: bool = False) -> LoadedModel:
    program = torch.export.export(model.module, (model.example_input(2),))
    if decompose:
        program = program.run_decompositions()
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    return LoadedModel(module=loaded.module(), arch={"kind": "pt2", "program": str(path)},
                       input_shape=model.input_shape, num_classes=model.num_classes, form="pt2",
                       path=path, program=loaded)


def space_of(spec: PermutationSpec, key: str, dim: int) -> str:
    axis = spec.axes[key][dim]
    assert axis is not None, f"{key} axis {dim} is not permutable"
    return axis.space


@pytest.mark.parametrize("family", sorted(SMALL))
def test_family_discovery_and_self_test(family: str) -> None:
    model = family_model(family)
    spec = discover_spec(model)
    assert spec.unsupported == []
    state = model.state()
    assert set(spec.axes) == set(state)
    for key, tensor in state.items():
        assert len(spec.axes[key]) == tensor.dim(), key
    assert len(spec.free_spaces()) >= MIN_FREE[family]
    first, head = spec.layers[0], spec.layers[-1]
    assert spec.spaces[first.in_axis.space].fixed
    assert spec.spaces[first.in_axis.space].reason == "network input"
    assert spec.spaces[head.out_axis.space].fixed
    assert spec.spaces[head.out_axis.space].reason == "class output"
    assert [layer.index for layer in spec.layers] == list(range(len(spec.layers)))
    report = self_test(model, spec)
    assert report.passed
    assert set(report.per_space) == {s.id for s in spec.free_spaces()}
    assert all(diff < 1e-4 for diff in report.per_space.values())
    assert report.overall < 1e-4


def test_resnet_stream_is_one_space() -> None:
    spec = discover_spec(family_model("resnet"))
    stream = space_of(spec, "stem.weight", 0)
    for b in (0, 1):
        assert space_of(spec, f"blocks.{b}.conv2.weight", 0) == stream
        assert space_of(spec, f"blocks.{b}.bn2.running_var", 0) == stream
        assert space_of(spec, f"blocks.{b}.conv1.weight", 1) == stream
    assert spec.layer("head").in_axis.space == stream
    assert not spec.spaces[stream].fixed
    conv1 = {space_of(spec, f"blocks.{b}.conv1.weight", 0) for b in (0, 1)}
    assert len(conv1) == 2 and stream not in conv1
    assert all(not spec.spaces[s].fixed for s in conv1)
    assert spec.layer("blocks.0.conv1").norm == tuple(
        f"blocks.0.bn1.{n}" for n in ("weight", "bias", "running_mean", "running_var"))
    assert spec.axes["blocks.0.conv1.weight"][2:] == (None, None)  # kernel axes never move
    assert spec.axes["stem_bn.num_batches_tracked"] == ()


def test_mixer_tokens_fixed_channels_shared() -> None:
    spec = discover_spec(family_model("mixer"))
    stream = space_of(spec, "patch_embed.weight", 0)
    for key in ("blocks.0.norm1.weight", "blocks.1.norm2.bias", "blocks.0.channel_fc2.weight",
                "norm.weight"):
        assert space_of(spec, key, 0) == stream
    assert spec.layer("head").in_axis.space == stream
    assert not spec.spaces[stream].fixed
    token_hidden = spec.layer("blocks.0.token_fc1").out_axis.space
    assert not spec.spaces[token_hidden].fixed
    tokens = spec.layer("blocks.0.token_fc2").out_axis.space
    assert spec.spaces[tokens].fixed and spec.spaces[tokens].reason == "spatial positions"
    assert spec.layer("blocks.0.token_fc1").in_axis.space == tokens


def test_linear_after_flatten_has_block() -> None:
    spec = discover_spec(family_model("cnn"))
    fc = spec.layer("fc")
    assert fc.in_axis.space == spec.layer("features.2.0").out_axis.space
    assert fc.in_axis.block == 2 * 2  # 8x8 input, two 2x2 poolings
    assert spec.spaces[fc.in_axis.space].size == 6
    assert spec.layer("features.0.0").kernel == (3, 3)
    assert spec.layer("features.0.0").bias is None


@pytest.mark.parametrize("family", ["cnn", "resnet", "mixer"])  # flatten block, stream, tokens
def test_pt2_round_trip_gives_same_spec(family: str, tmp_path) -> None:
    model = family_model(family)
    spec = discover_spec(model)
    loaded = pt2_round_trip(model, tmp_path)
    spec2 = discover_spec(loaded)
    assert spec2.spaces == spec.spaces
    assert spec2.axes == spec.axes
    assert spec2.layers == spec.layers
    assert self_test(loaded, spec2).passed


@pytest.mark.parametrize("family", ["cnn", "mixer"])
def test_decomposed_program_gives_same_spaces(family: str, tmp_path) -> None:
    # core ATen: linear -> permute + addmm over a (batch*tokens, dim) view, batch norm -> legit op
    model = family_model(family)
    spec = discover_spec(model)
    loaded = pt2_round_trip(model, tmp_path, decompose=True)
    spec2 = discover_spec(loaded)
    assert spec2.unsupported == []
    assert spec2.spaces == spec.spaces
    assert spec2.axes == spec.axes
    assert self_test(loaded, spec2).passed


class _Odd(nn.Module):
    """Linear layers around an op discovery cannot reason about."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.cumsum(h, -1) if self.op == "cumsum" else torch.roll(h, 1, -1)
        return self.c(torch.relu(self.b(h)))


@pytest.mark.parametrize("op", ["cumsum", "roll"])
def test_unsupported_op_fixes_its_spaces(op: str) -> None:
    model = custom_model(_Odd(op), (6,))
    spec = discover_spec(model)
    name = f"aten.{op}.default"
    assert spec.unsupported == [name]
    touched = spec.spaces[spec.layer("a").out_axis.space]
    assert touched.fixed and name in touched.reason
    assert spec.spaces[spec.layer("b").in_axis.space].fixed
    assert not spec.spaces[spec.layer("b").out_axis.space].fixed  # untouched space stays free
    report = self_test(model, spec)
    assert report.passed and report.unsupported == [name]


def test_wrong_spec_fails_self_test() -> None:
    model = family_model("mlp")
    spec = discover_spec(model)
    axes = dict(spec.axes)
    axes["layers.1.weight"] = (axes["layers.1.weight"][0], None)  # forget the reader's input side
    wrong = replace(spec, axes=axes)
    report = self_test(model, wrong)
    assert not report.passed
    assert report.per_space["P_layers.0"] > 1e-2
    assert report.per_space["P_layers.1"] < 1e-4


def test_wrong_norm_axis_fails_self_test() -> None:
    model = family_model("cnn")
    spec = discover_spec(model)
    axes = dict(spec.axes)
    axes["features.0.1.running_mean"] = (None,)  # BN statistics left behind
    assert not self_test(model, replace(spec, axes=axes)).passed


class _Assorted(nn.Module):
    """Grouped and depthwise convs, attention, a buffer, tied weights, concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.g = nn.Conv2d(4, 4, 1, groups=2)
        self.dw = nn.Conv2d(4, 8, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(8)
        self.p = nn.Conv2d(8, 8, 1)
        self.q, self.k, self.v = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(8, 5)
        self.o = nn.Linear(5, 8)
        self.u = nn.Linear(8, 8)
        self.w = nn.Linear(8, 8)
        self.w.weight = self.u.weight
        self.head, self.g_head = nn.Linear(8, 3), nn.Linear(4, 3)
        self.register_buffer("scale", torch.rand(8) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = F.silu(self.c0(x))
        g = self.g(h0).mean((2, 3))
        h = self.p(F.hardtanh(self.bn(self.dw(h0))))
        t = h.flatten(2).transpose(1, 2)  # (batch, positions, channels)
        t = t + self.o(F.scaled_dot_product_attention(self.q(t), self.k(t), self.v(t)))
        t = self.w(torch.tanh(self.u(t))) * self.scale
        t = torch.cat([t, t.flip(1)], 1)  # along positions: nothing to pin
        return self.head(t.mean(1)) + self.g_head(g)


def test_assorted_ops_pass_self_test() -> None:
    model = custom_model(_Assorted(), (2, 4, 4))
    spec = discover_spec(model)
    assert spec.unsupported == ["aten.conv2d.default"]  # the grouped conv pins its input
    c0 = spec.spaces[spec.layer("c0").out_axis.space]
    assert c0.fixed and "grouped convolution" in c0.reason
    dw = spec.layer("dw").out_axis
    assert dw.space == c0.id and dw.block == 2  # depthwise: two outputs per input channel
    stream = spec.layer("p").out_axis.space
    assert not spec.spaces[stream].fixed
    assert spec.layer("o").out_axis.space == stream
    assert space_of(spec, "scale", 0) == stream
    assert spec.axes["w.weight"] == spec.axes["u.weight"]  # tied weights share spaces
    assert spec.layer("q").out_axis.space == spec.layer("k").out_axis.space
    assert not spec.spaces[spec.layer("q").out_axis.space].fixed
    assert not spec.spaces[spec.layer("v").out_axis.space].fixed
    report = self_test(model, spec)
    assert report.passed and len(report.per_space) >= 3


def test_self_test_permutations_are_seeded() -> None:
    model = family_model("mlp")
    spec = discover_spec(model)
    assert self_test(model, spec, seed=3) == self_test(model, spec, seed=3)


def _outputs(model: LoadedModel, module: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return module(model.example_input(8, seed=1))


def test_pad_mlp_with_dead_units_keeps_outputs() -> None:
    model = family_model("mlp")
    spec = discover_spec(model)
    state, padded = pad_space(model.state(), spec, "P_layers.0", 3)
    assert padded.spaces["P_layers.0"].size == 15
    assert state["layers.0.weight"].shape == (15, 64) and state["layers.1.weight"].shape == (10, 15)
    assert torch.equal(state["layers.1.weight"][:, 12:], torch.zeros(10, 3))
    wider = build_model("mlp", {**model.arch["config"], "widths": [15, 10]})
    wider.load_state_dict(state)
    torch.testing.assert_close(_outputs(model, wider), _outputs(model, model.module))


def test_pad_cnn_channels_through_flatten_keeps_outputs() -> None:
    model = family_model("cnn")
    spec = discover_spec(model)
    space = spec.layer("features.2.0").out_axis.space
    state, padded = pad_space(model.state(), spec, space, 2)
    assert padded.spaces[space].size == 8
    assert state["fc.weight"].shape == (8, 8 * 4)  # each channel owns a 2x2 block of fc inputs
    assert torch.equal(state["features.2.1.running_var"][6:], torch.ones(2))
    wider = build_model("cnn", {**model.arch["config"], "channels": [4, 8]}).eval()
    wider.load_state_dict(state)
    torch.testing.assert_close(_outputs(model, wider), _outputs(model, model.module))
    with pytest.raises(AlignmentError):
        pad_space(model.state(), spec, spec.layer("head").out_axis.space, 1)


def test_pad_gate_stacked_axes_in_every_gate_keeps_outputs() -> None:
    """An axis of ``tiles`` copies (an LSTM's four gates per hidden unit) gets its new units
    in every copy: appended only at the end, the new rows would all land in the last gate and
    shift the others' units (the padded LSTM computed something else)."""
    from mal_desktop.core.graph.spec import Axis, Space

    torch.manual_seed(0)
    small, wide = nn.LSTM(5, 3, batch_first=True), nn.LSTM(5, 5, batch_first=True)
    gates = Axis("h", 1, 4)
    spec = PermutationSpec({"h": Space("h", 3)},
                           {"weight_ih_l0": (gates, None), "weight_hh_l0": (gates, Axis("h")),
                            "bias_ih_l0": (gates,), "bias_hh_l0": (gates,)})
    state, padded = pad_space(dict(small.state_dict()), spec, "h", 2)
    assert padded.spaces["h"].size == 5 and state["weight_ih_l0"].shape == (20, 5)
    wide.load_state_dict(state)
    x = torch.randn(2, 4, 5)
    with torch.no_grad():
        want, got = small(x)[0], wide(x)[0]
    torch.testing.assert_close(got[..., :3], want)
    assert torch.equal(got[..., 3:], torch.zeros(2, 4, 2))  # dead units
