"""Tiny real models and their layer trees for the GUI view tests (no files, seeded).

Not a test module: tests/gui/test_models.py and test_drag_drop.py import it. Trees are cached
per process because discovery exports the model (the first export costs a few seconds).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from mal_desktop.core.graph.tree import LayerTree, build_layer_tree
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.arch.families import build_model, full_config

# name -> (family, config overrides)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "base_mlp": ("mlp", {"widths": [128, 64]}),
    "zoo_mlp": ("mlp", {"widths": [64, 96]}),
    "zoo_mlp5": ("mlp", {"widths": [64, 64], "num_classes": 5}),
    "zoo_cnn": ("cnn", {"channels": [8, 16], "hidden": 32}),
    "base_cnn": ("cnn", {"channels": [16, 8], "hidden": 48}),
    "zoo_cnn5": ("cnn", {"channels": [8, 16], "hidden": 32, "kernel": 5}),
    "resnet": ("resnet", {"width": 8, "blocks": 2}),
}


@lru_cache(maxsize=None)
def loaded(name: str) -> LoadedModel:
    family, overrides = MODELS[name]
    config = full_config(family, overrides)
    torch.manual_seed(sum(map(ord, name)))
    module = build_model(family, config)
    return LoadedModel(module, {"kind": "family", "family": family, "config": config},
                       tuple(config["input_shape"]), int(config["num_classes"]),
                       metadata={"name": name})


@lru_cache(maxsize=None)
def tree(name: str) -> LayerTree:
    return build_layer_tree(loaded(name))


def entry(name: str):
    from mal_desktop.gui.workspace import ModelEntry

    return ModelEntry(name, None, loaded(name), tree(name))
