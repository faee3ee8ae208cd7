"""The layer tree: hierarchy, counts, statistics, search, repeated blocks, JSON."""

from __future__ import annotations

import json

import pytest
import torch

from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.tree import build_layer_tree, parse_shape
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.arch.families import build_model, full_config

SMALL = {
    "mlp": {"widths": [12, 10]},
    "resnet": {"width": 6, "blocks": 2},
    "mixer": {"dim": 8, "depth": 2, "token_hidden": 6, "channel_hidden": 10},
}


def family_model(family: str) -> LoadedModel:
    torch.manual_seed(0)
    cfg = full_config(family, SMALL[family])
    module = build_model(family, cfg)
    with torch.no_grad():  # non-trivial statistics to compare
        for name, buf in module.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand(buf.shape) + 0.5)
    return LoadedModel(module=module, arch={"kind": "family", "family": family, "config": cfg},
                       input_shape=tuple(cfg["input_shape"]), num_classes=cfg["num_classes"],
                       metadata={"name": f"tiny-{family}"})


@pytest.fixture(scope="module")
def resnet() -> LoadedModel:
    return family_model("resnet")


def test_param_counts_match_module(resnet: LoadedModel) -> None:
    tree = build_layer_tree(resnet)
    total = sum(p.numel() for p in resnet.module.parameters())
    assert tree.total_params == total == tree.root.params
    assert tree.model_name == "tiny-resnet"
    for node in tree.root.walk():
        module = resnet.module.get_submodule(node.path) if node.path else resnet.module
        assert node.params == sum(p.numel() for p in module.parameters()), node.path
    assert [c.path for c in tree.root.children] == ["stem", "stem_bn", "blocks", "head"]


def test_tensor_stats_match_torch(resnet: LoadedModel) -> None:
    tree = build_layer_tree(resnet)
    state = resnet.state()
    seen = set()
    for node in tree.root.walk():
        for info in node.tensors:
            t = state[info.key]
            seen.add(info.key)
            assert info.shape == tuple(t.shape) and info.numel == t.numel()
            assert info.dtype == str(t.dtype).removeprefix("torch.")
            f = t.double()
            assert info.norm == pytest.approx(float(f.norm()), rel=1e-6)
            assert info.mean == pytest.approx(float(f.mean()), rel=1e-6, abs=1e-9)
            expected_std = float(f.std()) if t.numel() > 1 else 0.0
            assert info.std == pytest.approx(expected_std, rel=1e-6, abs=1e-9)
    assert seen == set(state)


def test_kinds_layers_and_axes(resnet: LoadedModel) -> None:
    spec = discover_spec(resnet)
    tree = build_layer_tree(resnet, spec)
    conv1 = tree.find("blocks.0.conv1")
    assert conv1 is not None and conv1.kind == "conv2d"
    assert conv1.layer == spec.layer("blocks.0.conv1")
    assert tree.find("blocks.0.bn1").kind == "batchnorm" and tree.find("blocks.0.bn1").layer is None
    assert tree.find("head").kind == "linear"
    assert tree.find("") is tree.root and tree.root.kind == "model"
    assert tree.find("nope") is None
    (weight,) = conv1.tensors
    stream = spec.layer("stem").out_axis.space
    assert weight.axes == (spec.layer("blocks.0.conv1").out_axis.space, stream, None, None)
    assert weight.fixed == (False, False, True, True)
    head_weight = tree.find("head").tensors[0]
    assert head_weight.fixed == (True, False)  # class outputs never move
    counter = next(t for t in tree.find("stem_bn").tensors if t.key.endswith("num_batches_tracked"))
    assert counter.axes == () and counter.dtype == "int64"


def test_search_by_name_and_shape(resnet: LoadedModel) -> None:
    tree = build_layer_tree(resnet)
    assert [n.path for n in tree.search("conv1")] == ["blocks.0.conv1", "blocks.1.conv1"]
    assert [n.path for n in tree.search("BN2")] == ["blocks.0.bn2", "blocks.1.bn2"]
    convs = ["blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2"]
    assert [n.path for n in tree.search("6x6x3x3")] == convs
    for text in ("10x6", "10, 6", "(10, 6)", "10×6"):
        assert [n.path for n in tree.search(text)] == ["head"], text
    assert tree.search("") == [] and tree.search("no-such-layer") == []
    assert parse_shape("64 x 32") == (64, 32) and parse_shape("conv1") is None


def test_repeated_blocks_share_a_signature(resnet: LoadedModel) -> None:
    tree = build_layer_tree(resnet)
    b0, b1 = tree.find("blocks.0"), tree.find("blocks.1")
    assert b0.repeat is not None and b0.repeat == b1.repeat
    assert b0.repeat.startswith("BasicBlock")
    assert tree.find("stem").repeat is None and tree.find("blocks").repeat is None


def test_blocks_of_different_shape_do_not_repeat() -> None:
    torch.manual_seed(0)
    cfg = full_config("vgg", {"stages": [[4, 4], [6]]})
    model = LoadedModel(module=build_model("vgg", cfg), arch={}, input_shape=(1, 8, 8),
                        num_classes=10)
    tree = build_layer_tree(model)
    # features.0 reads 1 channel, features.1 reads 4: same modules, different shapes
    assert tree.find("features.0").repeat is None and tree.find("features.1").repeat is None


def test_to_json_is_plain(resnet: LoadedModel) -> None:
    tree = build_layer_tree(resnet)
    data = json.loads(json.dumps(tree.to_json(), allow_nan=False))
    assert data["total_params"] == tree.total_params
    paths = [layer["path"] for layer in data["layers"]]
    assert paths[0] == "" and "blocks.1.conv2" in paths
    head = data["layers"][paths.index("head")]
    assert head["layer"]["out_space"] == "P_head" and head["tensors"][0]["shape"] == [10, 6]
    assert head["tensors"][0]["fixed"] == [True, False]
    spaces = {s["id"]: s for s in data["spaces"]}
    assert spaces["P_head"]["fixed"] and spaces["P_head"]["reason"] == "class output"
    assert ["blocks.1.bn2.running_mean", 0] in spaces["P_stream_stem"]["tensors"]
    assert data["unsupported"] == []


def test_pt2_module_gives_the_same_tree(tmp_path) -> None:
    model = family_model("mixer")
    program = torch.export.export(model.module, (model.example_input(2),))
    torch.export.save(program, tmp_path / "m.pt2")
    loaded_program = torch.export.load(tmp_path / "m.pt2")
    loaded = LoadedModel(module=loaded_program.module(), arch={"kind": "pt2"},
                         input_shape=model.input_shape, num_classes=model.num_classes,
                         form="pt2", path=tmp_path / "m.pt2", program=loaded_program)
    tree, tree2 = build_layer_tree(model), build_layer_tree(loaded)

    def summary(t):
        return [(n.path, n.kind, n.params, n.repeat, [i.shape for i in n.tensors])
                for n in t.root.walk()]

    assert summary(tree2) == summary(tree)
    assert tree2.model_name == "m"
    assert tree.find("blocks.0.norm1").kind == "layernorm"
    assert tree.find("blocks.0").repeat == tree.find("blocks.1").repeat is not None


def test_mlp_tree_lists_every_weight_layer() -> None:
    model = family_model("mlp")
    tree = build_layer_tree(model)
    dragged = [n.path for n in tree.root.walk() if n.layer is not None]
    assert dragged == ["layers.0", "layers.1", "head"]
    assert tree.find("layers").kind == "module" and tree.find("layers.0").kind == "linear"


def test_stacked_recurrent_layers_are_layer_nodes() -> None:
    """A 2-layer bidirectional LSTM is one module holding two layers: each is a node of its
    own (draggable like any layer) holding its input and recurrent weights, biases and reverse
    direction; the module keeps none of them and the counts still add up."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import idiom_modules as im

    torch.manual_seed(0)
    model = LoadedModel(im.LSTMNet("lstm", 2, True).eval(), {"kind": "memory"}, (4, 5), 3)
    tree = build_layer_tree(model)
    spec = tree.spec
    assert [n.path for n in tree.root.walk() if n.layer is not None] == ["rnn.l0", "rnn.l1",
                                                                         "fc"]
    rnn = tree.find("rnn")
    assert rnn.layer is None and rnn.tensors == ()
    assert [c.path for c in rnn.children] == ["rnn.l0", "rnn.l1"]
    for k in (0, 1):
        node = tree.find(f"rnn.l{k}")
        assert node.layer == spec.layer(f"rnn.l{k}") and node.kind == "lstm"
        assert sorted(t.key for t in node.tensors) == sorted(
            f"rnn.{w}_{a}_l{k}{r}" for w in ("weight", "bias") for a in ("ih", "hh")
            for r in ("", "_reverse"))
    assert rnn.params == sum(p.numel() for p in model.module.rnn.parameters())
    assert tree.total_params == tree.root.params
