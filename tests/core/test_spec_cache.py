"""Discovered specs are cached per architecture: a warm `mal inspect` / `mal curve` never traces
the model (no recording, no torch.export), and the cache never answers for a different
architecture or discovery code."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from mal_desktop.cli import main
from mal_desktop.core.graph import discover, spec_cache
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.spec_cache import spec_from_json, spec_key, spec_to_json
from mal_desktop.core.io.files import load_model, save_model


@pytest.fixture
def spec_dir(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    monkeypatch.setenv("MAL_SPEC_CACHE", str(folder))
    return folder


def _no_trace(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was traced although its spec is cached")

    monkeypatch.setattr(torch.export, "export", refuse)
    monkeypatch.setattr(discover, "record_graph", refuse)


def _without_spec(zoo, name: str, folder) -> str:
    """A copy of a zoo model that carries no spec (zoo files carry one, used without the cache:
    see test_file_spec.py), so that its spaces come from discovery and the cache."""
    path = folder / f"{name}.safetensors"
    save_model(load_model(zoo.path_of(name)), path)
    return str(path)


def test_warm_inspect_and_curve_do_not_trace(small_zoo, spec_dir, tmp_path, monkeypatch,
                                              capsys):
    a, b, cnn = (_without_spec(small_zoo, name, tmp_path)
                 for name in ("mlp-w32-s0", "mlp-w32-s1", "cnn-w8-s0"))
    assert main(["inspect", cnn, "--json"]) == 0
    cold = json.loads(capsys.readouterr().out)
    assert main(["inspect", a, "--json"]) == 0  # a and b share an architecture: one entry
    capsys.readouterr()
    assert len(list(spec_dir.glob("*.json"))) == 2

    _no_trace(monkeypatch)
    assert main(["inspect", cnn, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == cold
    assert main(["curve", "--base", a, "--target", b, "--data", "digits", "--grid", "3",
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["aligned"]["loss"]) == 3
    assert main(["curve", "--base", a, "--target", b, "--data", "digits", "--grid", "3",
                 "--layers", "layers.0:layers.0", "--align", "chain", "--json"]) == 0


def test_cold_discovery_without_a_cache_still_traces(small_zoo, spec_dir, tmp_path,
                                                     monkeypatch):
    model = load_model(_without_spec(small_zoo, "resnet-w8-s0", tmp_path))
    _no_trace(monkeypatch)
    with pytest.raises(Exception, match="was traced"):
        discover_spec(model)


def test_json_round_trip_is_the_same_spec(small_zoo, spec_dir):
    for name in small_zoo.names():
        spec = discover_spec(load_model(small_zoo.path_of(name)), cache=False)
        assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


def test_json_round_trip_keeps_attention_heads(spec_dir):
    import sys
    from pathlib import Path

    from mal_desktop.core.io.model import LoadedModel

    sys.path.insert(0, str(Path(__file__).parent))
    import idiom_modules as im

    model = LoadedModel(im.TinyTransformer().eval(), {"kind": "memory"}, (4, 5), 3)
    spec = discover_spec(model, cache=False)
    assert len(spec.head_groups) == 2  # the fused q/k/v projection and the output's input
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


def test_key_follows_architecture_not_weights(small_zoo, spec_dir):
    s0, s1 = load_model(small_zoo.path_of("mlp-w32-s0")), load_model(small_zoo.path_of("mlp-w32-s1"))
    wide = load_model(small_zoo.path_of("mlp-w64-s0"))
    assert spec_key(s0) == spec_key(s1) is not None
    assert spec_key(wide) != spec_key(s0)
    assert spec_key(replace(s0, input_dtype=torch.float64)) != spec_key(s0)
    assert spec_key(replace(s0, arch={"kind": "memory"})) is None  # made in memory: no identity


def test_a_damaged_entry_is_rediscovered(small_zoo, spec_dir, tmp_path):
    model = load_model(_without_spec(small_zoo, "cnn-w8-s0", tmp_path))
    spec = discover_spec(model)
    (entry,) = spec_dir.glob("*.json")
    entry.write_text('{"format": 1, "spaces": [')
    assert discover_spec(model) == spec
    assert spec_cache.load_spec(spec_key(model)) == spec  # rewritten


def test_a_hugging_face_folder_is_discovered_once(tmp_path, spec_dir, monkeypatch, capsys):
    """Two folders of one config share a cache entry; the second inspect never traces."""
    pytest.importorskip("transformers")
    from test_hf_folders import write_llama

    first, _ = write_llama(tmp_path / "a", seed=0)
    second, _ = write_llama(tmp_path / "b", seed=1)
    assert main(["inspect", str(first), "--json"]) == 0
    cold = json.loads(capsys.readouterr().out)["spaces"]
    assert len(list(spec_dir.glob("*.json"))) == 1
    _no_trace(monkeypatch)
    assert main(["inspect", str(second), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spaces"] == cold
