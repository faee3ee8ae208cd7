"""Discovery without weights: a model whose module lives on the meta device (shapes only, no
memory) gives exactly the spec the real model gives."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from mal_desktop.core.arch.families import build_model
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.tree import build_layer_tree
from mal_desktop.core.io.files import load_model
from mal_desktop.core.io.meta import meta_twin
from mal_desktop.core.io.model import LoadedModel


def _on_meta(model: LoadedModel) -> LoadedModel:
    meta = replace(model, module=meta_twin(model.module))
    assert all(t.is_meta for t in meta.module.state_dict().values())
    return meta


def test_zoo_families_discover_the_same_spaces_on_meta(small_zoo):
    for name in small_zoo.names():
        model = load_model(small_zoo.path_of(name))
        real = discover_spec(model, cache=False, on_meta=False)
        assert discover_spec(_on_meta(model), cache=False) == real, name
        assert discover_spec(model, cache=False) == real, name  # the default exports a twin


def test_a_family_built_on_meta_gives_the_tree_without_reading_weights(small_zoo):
    model = load_model(small_zoo.path_of("resnet-w8-s0"))
    with torch.device("meta"):
        module = build_model(model.arch["family"], model.arch["config"])
    meta = replace(model, module=module.eval())
    tree = build_layer_tree(meta, discover_spec(meta, cache=False))
    real = build_layer_tree(model, discover_spec(model, cache=False, on_meta=False))
    assert tree.spec == real.spec and tree.total_params == real.total_params
    assert [n.path for n in tree.root.walk()] == [n.path for n in real.root.walk()]
    info = tree.find("stem").tensors[0]
    assert info.shape == real.find("stem").tensors[0].shape and info.norm != info.norm  # NaN


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x).logits


def test_tiny_llama_discovers_the_same_spaces_on_meta():
    tf = pytest.importorskip("transformers")
    tf.logging.set_verbosity_error()
    cfg = tf.LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=24,
                         max_position_embeddings=16)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real_module = Logits(tf.LlamaForCausalLM(cfg)).eval()
        with torch.device("meta"):
            meta_module = Logits(tf.LlamaForCausalLM(cfg)).eval()
    model = LoadedModel(real_module, {"kind": "memory"}, (6,), 40, input_dtype=torch.int64,
                        input_range=40)
    real = discover_spec(model, on_meta=False)
    assert real.free_spaces()
    assert discover_spec(replace(model, module=meta_module)) == real
    assert discover_spec(_on_meta(model)) == real
