"""Bounded-memory merging: models are memory-mapped, the merge keeps unchanged tensors shared and
streams them out, and a large output is a sharded folder written atomically. The result is the
in-memory merge bit for bit. (Memory figures live in benchmarks/memory_bench.py, not here.)"""

from __future__ import annotations

import json

import pytest
import torch

from mal_desktop.core.errors import ModelFileError
from mal_desktop.core.io import sharded
from mal_desktop.core.io.files import load_model, load_sharded_model, save_model
from mal_desktop.core.jobs import assemble_job
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.core.progress import run_job


def _plan(zoo) -> AssemblyPlan:
    p = {name: str(zoo.path_of(name)) for name in zoo.names()}
    base = p["mlp-w32-s0"]
    return AssemblyPlan(base=base, zoo={k: v for k, v in p.items() if v != base}, steps=[
        AssemblyStep("mlp-w64-s0", "layers.0", "layers.0", 0.3, "chain"),
        AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.4, "local", "keep"),
        AssemblyStep("mlp-w64-s0", "head", "head", 0.2, "none"),
    ])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_streamed_merge_is_the_in_memory_merge_bit_for_bit(small_zoo, tmp_path):
    plan = _plan(small_zoo)
    # today's in-memory merge: every input a fully materialised copy in memory
    in_memory = {p: load_model(p) for p in [plan.base, *plan.zoo.values()]}
    in_memory = {p: m.with_state(m.state()) for p, m in in_memory.items()}
    assert all(m.path is None for m in in_memory.values())
    expected = run_job(assemble_job(plan, models=in_memory)).model.state()

    out = tmp_path / "merged.safetensors"
    result = run_job(assemble_job(plan, out=out))  # inputs memory-mapped, output streamed
    _same(result.model.state(), expected)
    _same(load_model(out).state(), expected)


def test_sharded_merge_reloads_equal_to_the_single_file(small_zoo, tmp_path):
    result = run_job(assemble_job(_plan(small_zoo)))
    single = save_model(result.model, tmp_path / "merged.safetensors")
    folder = save_model(result.model, tmp_path / "merged", max_shard_bytes=2048)
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((folder / sharded.INDEX).read_text())
    assert set(index["weight_map"]) == set(result.model.state())
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in result.model.state().values())

    a, b = load_model(single), load_sharded_model(folder)
    _same(b.state(), a.state())
    assert (b.arch, b.input_shape, b.num_classes, b.metadata) == \
        (a.arch, a.input_shape, a.num_classes, a.metadata)
    assert b.metadata["plan"] == result.model.metadata["plan"]  # provenance travels
    x = a.example_input(4)
    assert torch.equal(a.module(x), b.module(x))


def test_assemble_to_a_folder_writes_shards(small_zoo, tmp_path):
    plan = _plan(small_zoo)
    out = tmp_path / "merged"
    result = run_job(assemble_job(plan, out=out))
    assert result.out == out and sharded.is_sharded_folder(out)
    _same(load_sharded_model(out).state(), result.model.state())
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary folder left


def test_a_failed_sharded_write_leaves_the_old_output_whole(small_zoo, tmp_path, monkeypatch):
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    out = save_model(model, tmp_path / "out", max_shard_bytes=2048)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    written = []
    real = sharded.write_safetensors

    def fail_on_third(path, *args):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path)
        real(path, *args)

    monkeypatch.setattr(sharded, "write_safetensors", fail_on_third)
    other = load_model(small_zoo.path_of("mlp-w32-s1"))
    with pytest.raises(ModelFileError, match="No space left"):
        save_model(other, out, max_shard_bytes=2048)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the temporary folder is gone

    monkeypatch.undo()  # a write that succeeds replaces the old folder as a whole
    save_model(other, out, max_shard_bytes=2048)
    _same(load_sharded_model(out).state(), other.state())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_that_is_not_a_model_is_never_replaced(small_zoo, tmp_path):
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("years of work")
    with pytest.raises(ModelFileError, match="not a model folder"):
        save_model(model, documents)
    assert (documents / "thesis.txt").read_text() == "years of work"


def test_a_sharded_model_is_not_saved_over_itself(small_zoo, tmp_path):
    folder = save_model(load_model(small_zoo.path_of("mlp-w32-s0")), tmp_path / "m",
                        max_shard_bytes=2048)
    with pytest.raises(ModelFileError, match="own input file"):
        save_model(load_sharded_model(folder), folder)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_elementwise_methods_give_the_same_bits_in_chunks(method, dtype):
    from mal_desktop.core.merge.methods import _CHUNK, get_method, merge_tensor

    gen = torch.Generator().manual_seed(0)
    rows = _CHUNK // 1000 + 7  # several chunks and a ragged last one
    base = torch.randn(rows, 1000, generator=gen).to(dtype)
    target = torch.randn(rows, 1000, generator=gen).to(dtype)
    m = get_method(method)
    whole = m.fn(base.float(), target.float(), 0.3, seed=0, **({"scale": 1.0} if
                 method == "task_arithmetic" else {})).to(dtype)
    assert torch.equal(merge_tensor(method, base, target, 0.3), whole)


def test_a_folder_of_shards_reopens_wherever_a_model_path_is_taken(small_zoo, tmp_path):
    # `mal assemble --out merged` writes shards: `mal inspect merged`, a plan using it as an
    # input and the app open it like a .safetensors file
    from mal_desktop.cli import main
    from mal_desktop.core.io.files import model_form, read_header

    out = tmp_path / "merged"
    result = run_job(assemble_job(_plan(small_zoo), out=out))
    model = load_model(out)
    _same(model.state(), result.model.state())
    assert model.metadata["plan"] == result.model.metadata["plan"]
    assert model_form(out) == "mal-safetensors"
    header = read_header(out)
    assert header.shapes == {k: tuple(v.shape) for k, v in result.model.state().items()}
    assert header.arch == model.arch and header.num_classes == model.num_classes
    assert main(["inspect", str(out), "--quiet"]) == 0
