"""A mal file carries its permutation spec (zoo builds and merges write it): where the model
cannot be recorded (graph/record.py refuses it), opening the file with an empty spec cache finds
the spaces without exporting the model, and a spec that is not this model's, or that the
self-test refutes, is never used. Every test here runs as for such a model (``unrecordable``);
a model that can be recorded is, before any stored spec is looked at (test_record.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mal_desktop.core.graph import discover, file_spec
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.spec import Axis
from mal_desktop.core.graph.spec_cache import load_spec, spec_from_json, spec_key, spec_to_json
from mal_desktop.core.io.files import load_model, save_model
from mal_desktop.core.jobs import assemble_job
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.core.progress import run_job


@pytest.fixture(autouse=True)
def unrecordable(monkeypatch):
    """Models that cannot be recorded: the case the stored spec is for."""
    monkeypatch.setattr(discover, "_recordable", lambda module: False)


@pytest.fixture
def spec_dir(tmp_path, monkeypatch):
    """An empty spec cache: what a fresh machine or a colleague's account has."""
    folder = tmp_path / "specs"
    monkeypatch.setenv("MAL_SPEC_CACHE", str(folder))
    return folder


class TraceCalls:
    """Counts the times a model is traced, recorded (graph/record.py) or exported."""

    def __init__(self, monkeypatch):
        self.count = 0
        for owner, name in ((torch.export, "export"), (discover, "record_graph")):
            real = getattr(owner, name)

            def counted(*args, real=real, **kwargs):
                self.count += 1
                return real(*args, **kwargs)

            monkeypatch.setattr(owner, name, counted)


def _discovered(path) -> object:
    return discover_spec(load_model(path), cache=False)


@pytest.mark.parametrize("name", ["mlp-w32-s0", "cnn-w8-s0", "resnet-w8-s0"])
def test_a_zoo_file_opens_without_export_and_gives_the_discovered_spec(
        small_zoo, spec_dir, monkeypatch, name):
    path = small_zoo.path_of(name)
    model = load_model(path)
    assert model.stored_spec is not None and model.stored_spec["key"] == spec_key(model)
    traces = TraceCalls(monkeypatch)
    spec = discover_spec(model)
    assert traces.count == 0
    # vouched for by this file only: the cache, which answers for every model of the
    # architecture, holds only what discovery found
    assert load_spec(spec_key(model)) is None
    monkeypatch.undo()
    assert spec == _discovered(path)


def test_a_merge_output_carries_its_spec(small_zoo, spec_dir, tmp_path, monkeypatch):
    paths = {n: str(small_zoo.path_of(n)) for n in small_zoo.names()}
    base = paths.pop("mlp-w32-s0")
    plan = AssemblyPlan(base=base, zoo=paths,
                        steps=[AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.5, "chain")])
    out = tmp_path / "merged.safetensors"
    run_job(assemble_job(plan, out=out))
    merged = load_model(out)
    assert merged.stored_spec is not None
    monkeypatch.setenv("MAL_SPEC_CACHE", str(tmp_path / "other-machine"))
    traces = TraceCalls(monkeypatch)
    spec = discover_spec(merged)
    assert traces.count == 0
    monkeypatch.undo()
    assert spec == _discovered(out)


def _resave(model, path, spec_json, key=None):
    save_model(model, path, spec={"key": key or spec_key(model), "spec": spec_json})
    return load_model(path)


def test_a_spec_the_self_test_refutes_is_not_used(small_zoo, spec_dir, tmp_path, monkeypatch):
    """A crafted file claims the first layer's input (the image pixels) is a free space: its key
    is right, it fits the tensors, but permuting the pixels changes the outputs."""
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    true = _discovered(small_zoo.path_of("mlp-w32-s0"))
    crafted = spec_to_json(true)
    for space in crafted["spaces"]:
        space[2] = False  # every space free, the input and the class output included
    forged = _resave(model, tmp_path / "forged.safetensors", crafted)
    assert file_spec._fits(spec_from_json(crafted), forged.state())  # only the test catches it
    traces = TraceCalls(monkeypatch)
    assert discover_spec(forged) == true
    assert traces.count == 1  # refused, so discovered
    assert load_spec(spec_key(forged)) == true  # and the cache holds the true one


def test_a_spec_that_does_not_fit_the_tensors_is_not_used(small_zoo, spec_dir, tmp_path,
                                                          monkeypatch):
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    true = _discovered(small_zoo.path_of("mlp-w32-s0"))
    first = next(iter(true.axes))
    wrong = replace(true, axes={**true.axes, first: (Axis(true.axes[first][0].space, 2),
                                                     *true.axes[first][1:])})
    forged = _resave(model, tmp_path / "forged.safetensors", spec_to_json(wrong))
    assert not file_spec._fits(wrong, model.state())
    traces = TraceCalls(monkeypatch)
    assert discover_spec(forged) == true and traces.count == 1


def test_another_key_or_an_unreadable_spec_falls_back_to_discovery(small_zoo, spec_dir, tmp_path,
                                                                    monkeypatch):
    """A spec written by other discovery code (its key differs) or damaged in the file is a
    cache miss, never an error: the file opens and its spaces are discovered."""
    model = load_model(small_zoo.path_of("cnn-w8-s0"))
    true = _discovered(small_zoo.path_of("cnn-w8-s0"))
    other = _resave(model, tmp_path / "other.safetensors", spec_to_json(true), key="0" * 64)
    damaged = _resave(model, tmp_path / "damaged.safetensors", {"format": 3, "spaces": [[1]]})
    traces = TraceCalls(monkeypatch)
    assert discover_spec(other, cache=False) == true
    assert discover_spec(damaged, cache=False) == true
    assert traces.count == 2


def test_a_large_model_is_discovered_rather_than_self_tested(small_zoo, spec_dir, monkeypatch):
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    monkeypatch.setattr(file_spec, "MAX_PARAMETERS", 10)
    assert file_spec.verified_file_spec(model, spec_key(model)) is None


def test_a_file_saved_without_a_spec_has_none(small_zoo, tmp_path):
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    save_model(model, tmp_path / "plain.safetensors")
    assert load_model(tmp_path / "plain.safetensors").stored_spec is None


def test_weights_chosen_to_blind_the_self_test_do_not_pass_a_forged_spec(
        small_zoo, spec_dir, tmp_path, monkeypatch):
    """The spec is verified on the file's own weights, which the file's author chooses: a bias
    made constant is unchanged by any permutation, so a spec that leaves its axis out of the
    hidden space passed the test - and, cached per architecture, was then used to align every
    genuine model of that architecture, changing its function."""
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    true = _discovered(small_zoo.path_of("mlp-w32-s0"))
    with torch.no_grad():
        model.module.layers[0].bias.fill_(0.1)
    crafted = spec_to_json(true)
    for key, axes in crafted["axes"]:
        if key == "layers.0.bias":
            axes[0] = None
    for layer in crafted["layers"]:  # nor does the layer name it (that would not fit)
        if layer["bias"] == "layers.0.bias":
            layer["bias"] = None
    forged = _resave(model, tmp_path / "forged.safetensors", crafted)
    assert file_spec._fits(spec_from_json(crafted), forged.state())
    traces = TraceCalls(monkeypatch)
    assert discover_spec(forged) == true and traces.count == 1
    assert load_spec(spec_key(forged)) == true


def test_a_head_group_of_absurd_size_is_refused_at_once(small_zoo, spec_dir, tmp_path,
                                                        monkeypatch):
    """Head groups were not checked against their space: a group claiming millions of heads on
    a 32-unit space drew a permutation per head before the self-test failed (tens of seconds
    and gigabytes per million heads)."""
    import time
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    true = _discovered(small_zoo.path_of("mlp-w32-s0"))
    crafted = spec_to_json(true)
    crafted["head_groups"] = [["P_layers.0", "f", 10_000_000, 2, [["i", ""]], ""]]
    forged = _resave(model, tmp_path / "forged.safetensors", crafted)
    assert not file_spec._fits(spec_from_json(crafted), forged.state())
    start = time.perf_counter()
    assert discover_spec(forged) == true
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("group", [[-1, 2], [16, 0], [8, 2], [16, 2, []], [31, 1]])
def test_a_head_group_that_does_not_fill_its_space_does_not_fit(small_zoo, group):
    true = _discovered(small_zoo.path_of("mlp-w32-s0"))
    heads, dim, *rest = group
    parts = rest[0] if rest else [["i", ""]]
    crafted = spec_to_json(true)
    crafted["head_groups"] = [["P_layers.0", "f", heads, dim, parts, ""]]
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    assert not file_spec._fits(spec_from_json(crafted), model.state())
    crafted["head_groups"] = [["P_layers.0", "f", 16, 2, [["i", ""]], ""]]
    assert file_spec._fits(spec_from_json(crafted), model.state())


def test_a_spec_with_an_infinite_number_falls_back_to_discovery(small_zoo, spec_dir, tmp_path):
    """1e999 is valid JSON that Python reads as inf, and int(inf) raises OverflowError: it
    escaped the reader and a file that is otherwise good could not be opened for its spaces."""
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    true = _discovered(small_zoo.path_of("mlp-w32-s0"))
    crafted = spec_to_json(true)
    crafted["spaces"][0][1] = float("inf")
    # the record as the file's reader returns it (save_model itself never writes inf)
    forged = replace(model, stored_spec={"key": spec_key(model), "spec": crafted})
    assert discover_spec(forged) == true


@pytest.mark.parametrize("forge", ["bias", "swap", "transposed", "kernel"])
def test_a_layer_that_is_not_its_weights_does_not_fit(small_zoo, forge):
    """Layer steps merge the tensors a layer names along its out/in axes; the self-test never
    reads the layers list, so a forged layer (another layer's bias, out and in swapped, a
    flipped orientation) made a merge write one layer's result into another's tensors."""
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    crafted = spec_to_json(_discovered(small_zoo.path_of("mlp-w32-s0")))
    assert file_spec._fits(spec_from_json(crafted), model.state())
    layer = next(lay for lay in crafted["layers"] if lay["name"] == "layers.1")
    if forge == "bias":
        layer["bias"] = "layers.0.bias"
    elif forge == "swap":
        layer["out"], layer["in"] = layer["in"], layer["out"]
    elif forge == "transposed":
        layer["transposed"] = True
    else:
        layer["kernel"] = [3, 3]
    assert not file_spec._fits(spec_from_json(crafted), model.state())
