"""Our .pt2 reader accepts what torch.export.save writes: decomposed (core ATen) programs, dynamic
and static batch axes, tied weights, buffers, and gives the same permutation spaces as the model
they were exported from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mal_desktop.core.arch.families import build_model, full_config
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.selftest import self_test
from mal_desktop.core.io.files import load_model
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.io.pt2_io import program_batch_size

SMALL = {"cnn": {"channels": [4, 6], "hidden": 8},
         "mixer": {"dim": 8, "depth": 2, "token_hidden": 6, "channel_hidden": 10},
         "resnet": {"width": 6, "blocks": 2}}


def family(name: str) -> LoadedModel:
    torch.manual_seed(0)
    config = full_config(name, SMALL[name])
    module = build_model(name, config).eval()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 1.5)
    return LoadedModel(module, {"kind": "family", "family": name, "config": config},
                       tuple(config["input_shape"]), config["num_classes"])


@pytest.mark.parametrize("name,decompose", [("cnn", True), ("mixer", True), ("resnet", False)])
def test_programs_read_by_our_reader_give_the_models_spaces(name: str, decompose: bool,
                                                            tmp_path: Path) -> None:
    model = family(name)
    batch = torch.export.Dim("batch", min=1, max=512)
    program = torch.export.export(model.module, (model.example_input(4),),
                                  dynamic_shapes=({0: batch},))
    if decompose:
        program = program.run_decompositions()
    torch.export.save(program, str(tmp_path / "m.pt2"))
    loaded = load_model(tmp_path / "m.pt2")
    x = model.example_input(3, seed=1)
    assert torch.allclose(loaded.module(x), model.module(x), atol=1e-6)
    assert program_batch_size(loaded.program) is None
    spec, spec2 = discover_spec(model), discover_spec(loaded)
    assert spec2.unsupported == []
    assert spec2.spaces == spec.spaces and spec2.axes == spec.axes
    assert self_test(loaded, spec2).passed


def test_tied_weights_and_buffers_survive(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(6, 6, bias=False)
            self.out = nn.Linear(6, 6, bias=False)
            self.out.weight = self.embed.weight
            self.register_buffer("scale", torch.full((6,), 0.5))
            self.register_buffer("shift", torch.ones(6), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.embed(x)) * self.scale + self.shift)

    module = Tied().eval()
    torch.export.save(torch.export.export(module, (torch.randn(2, 6),)), str(tmp_path / "t.pt2"))
    loaded = load_model(tmp_path / "t.pt2")
    x = torch.randn(2, 6)
    assert torch.equal(loaded.module(x), module(x))
    assert program_batch_size(loaded.program) == 2
    state = loaded.program.state_dict
    assert state["embed.weight"].data_ptr() == state["out.weight"].data_ptr()  # one storage
    assert "shift" in loaded.program.constants and "scale" in state


def test_layer_tree_of_a_program_read_by_our_reader(tmp_path: Path) -> None:
    """Module classes come from the kept nn_module_stack: the tree matches the model's."""
    from mal_desktop.core.graph.tree import build_layer_tree

    model = family("mixer")
    torch.export.save(torch.export.export(model.module, (model.example_input(2),)),
                      str(tmp_path / "m.pt2"))
    loaded = load_model(tmp_path / "m.pt2")

    def summary(model: LoadedModel) -> list:
        return [(n.path, n.kind, n.params, n.repeat, [i.shape for i in n.tensors])
                for n in build_layer_tree(model).root.walk()]

    assert summary(loaded) == summary(model)
    assert build_layer_tree(loaded).find("blocks.0.norm1").kind == "layernorm"
