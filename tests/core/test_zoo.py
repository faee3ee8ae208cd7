"""Training job and demo-zoo builder: learning, determinism, cancellation, caching, the index."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from mal_desktop.core.errors import DatasetError, MalError
from mal_desktop.core.evaluate.datasets import Dataset, load_dataset
from mal_desktop.core.evaluate.evaluator import evaluate_model, evaluate_module
from mal_desktop.core.io.files import load_model
from mal_desktop.core.progress import Cancelled, CancelToken, ProgressEvent, run_job
from mal_desktop.core.zoo.build import ZooEntry, build_zoo_job, default_zoo, default_zoo_dir, load_zoo_index
from mal_desktop.core.arch.families import FAMILIES, build_model
from mal_desktop.core.zoo.train import train_job


def _mlp(width: int = 64, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", {"widths": [width, width]})


# ---------------------------------------------------------------- training


def test_train_job_mlp_reaches_95_percent_on_digits() -> None:
    data = load_dataset("digits")
    module = _mlp()
    events: list[ProgressEvent] = []
    # 20 epochs (the zoo uses 60 for margin at width 32); kept short for a loaded test machine
    result = run_job(train_job(module, data, epochs=20, lr=1e-2), events.append)
    assert result.test_accuracy >= 0.95
    assert result.epochs == 20 and result.seconds > 0
    assert [e.payload["epoch"] for e in events] == list(range(1, 21))
    assert all(e.stage == "train" for e in events)
    assert events[-1].fraction == 1.0
    assert events[-1].payload["loss"] < events[0].payload["loss"]
    assert not module.training
    # The reported score is the model's real test score.
    again = evaluate_module(module, data.x_test, data.y_test)
    assert again.accuracy == pytest.approx(result.test_accuracy)


def test_train_job_is_deterministic_and_keeps_caller_grad_mode() -> None:
    data = load_dataset("digits")
    a, b = _mlp(16), _mlp(16)
    run_job(train_job(a, data, epochs=2, seed=3))
    # Driven from a no_grad caller: training still works and the caller's mode is untouched
    # between the yields (the job's enable_grad does not leak out).
    job = train_job(b, data, epochs=2, seed=3)
    with torch.no_grad():
        while True:
            try:
                next(job)
            except StopIteration:
                break
            assert not torch.is_grad_enabled()
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = _mlp(16)
    run_job(train_job(c, data, epochs=2, seed=4))
    assert not torch.equal(sa["head.weight"], c.state_dict()["head.weight"])


def test_train_job_cancel_raises_and_leaves_eval_mode() -> None:
    data = load_dataset("digits")
    module = _mlp(16)
    token = CancelToken()
    job = train_job(module, data, epochs=50, cancel=token)
    next(job)  # first epoch done
    token.cancel()
    with pytest.raises(Cancelled):
        next(job)
    assert not module.training


def test_train_job_without_training_samples() -> None:
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    data = Dataset("user", x[:0], y[:0], x, y, 10)
    with pytest.raises(DatasetError, match="no training samples"):
        run_job(train_job(_mlp(8), data, epochs=1))


# ---------------------------------------------------------------- zoo definition


def test_default_zoo_shape() -> None:
    zoo = default_zoo()
    names = [e.name for e in zoo]
    assert len(set(names)) == len(names)
    assert {e.family for e in zoo} >= {"mlp", "cnn", "vgg", "resnet", "mixer"}
    assert {e.family for e in zoo} <= set(FAMILIES)
    for family in ("mlp", "cnn", "vgg", "resnet", "mixer"):
        widths = {e.name.split("-")[1] for e in zoo if e.family == family}
        assert len(widths) >= 3, family
    # same family, same width, different seed
    assert {"mlp-w64-s0", "mlp-w64-s1", "cnn-w16-s0", "cnn-w16-s1", "resnet-w16-s1"} <= set(names)
    # different data, differing from the "-s1" model in the data only
    for family, width in (("mlp", 64), ("cnn", 16)):
        for variant in ("permuted", "rot90", "inverted"):
            entry = next(e for e in zoo if e.name == f"{family}-w{width}-s1-{variant}")
            twin = next(e for e in zoo if e.name == f"{family}-w{width}-s1")
            assert entry.dataset == f"digits-{variant}"
            assert dataclasses.replace(entry, name=twin.name, dataset=twin.dataset) == twin
    small = default_zoo(small=True)
    assert 3 <= len(small) <= 6 and {e.family for e in small} >= {"mlp", "cnn"}


def test_entry_hash_tracks_the_recipe() -> None:
    e = ZooEntry("m", "mlp", {"widths": [8, 8]}, "digits", 0, 3)
    assert e.entry_hash() == ZooEntry("m", "mlp", {"widths": [8, 8]}, "digits", 0, 3).entry_hash()
    assert e.entry_hash() != ZooEntry("m", "mlp", {"widths": [8, 8]}, "digits", 0, 4).entry_hash()
    assert e.entry_hash() != ZooEntry("m", "mlp", {"widths": [8, 9]}, "digits", 0, 3).entry_hash()


def test_default_zoo_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAL_ZOO_DIR", str(tmp_path / "z"))
    assert default_zoo_dir() == tmp_path / "z"
    monkeypatch.delenv("MAL_ZOO_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_zoo_dir() == tmp_path / "cache" / "mal_desktop" / "zoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_zoo_dir() == tmp_path / "home" / ".cache" / "mal_desktop" / "zoo"


# ---------------------------------------------------------------- building


def _build(out: Path, entries: list[ZooEntry], cancel: CancelToken | None = None):
    events: list[ProgressEvent] = []
    index = run_job(build_zoo_job(out, entries, cancel), events.append)
    return index, events


def _model_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".safetensors" in p.name)


def test_build_small_zoo_then_rebuild_is_cached(tmp_path: Path) -> None:
    entries = default_zoo(small=True)
    index, events = _build(tmp_path, entries)
    names = [e.name for e in entries]
    assert index.names() == names
    assert _model_files(tmp_path) == sorted(f"{n}.safetensors" for n in names)
    # progress: stage "zoo", monotone fractions up to 1, the promised message form
    assert {e.stage for e in events} == {"zoo"}
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert f"training {names[0]} (1/{len(names)}) epoch 1/{entries[0].epochs}" in [e.message for e in events]

    loaded_index = load_zoo_index(tmp_path)
    assert loaded_index.names() == names
    for entry, info in zip(entries, loaded_index.entries):
        model = load_model(loaded_index.path_of(entry.name))
        meta = model.metadata
        assert meta["name"] == entry.name and meta["family"] == entry.family
        assert meta["dataset"] == entry.dataset and meta["seed"] == entry.seed
        assert meta["entry_hash"] == entry.entry_hash() and meta["recipe"] >= 2
        assert "trained_at" not in meta  # no time stamps: equal training, equal files
        assert model.arch["kind"] == "family" and model.arch["family"] == entry.family
        assert model.arch["config"]["input_shape"] == [1, 8, 8]
        # The stored accuracy is the saved model's real accuracy.
        assert 0.1 < meta["test_accuracy"] <= 1.0
        measured = evaluate_model(model, load_dataset(entry.dataset))
        assert measured.accuracy == pytest.approx(meta["test_accuracy"])
        assert info.test_accuracy == pytest.approx(meta["test_accuracy"])
    mlp_acc = loaded_index.info(names[0]).test_accuracy
    assert mlp_acc > 0.6  # trained a few epochs only, yet far above chance (0.1)

    mtimes = {p: os.stat(p).st_mtime_ns for p in tmp_path.glob("*.safetensors")}
    again, events2 = _build(tmp_path, entries)
    assert not [e for e in events2 if e.message.startswith("training")]
    assert {os.stat(p).st_mtime_ns for p in mtimes} == set(mtimes.values())
    assert again.entries == index.entries

    # A changed recipe retrains exactly that entry.
    changed = [dataclasses.replace(entries[0], epochs=entries[0].epochs + 1), *entries[1:]]
    _, events3 = _build(tmp_path, changed)
    trained = {e.payload["name"] for e in events3 if e.message.startswith("training")}
    assert trained == {entries[0].name}


def test_cancelled_build_keeps_finished_models_only(tmp_path: Path) -> None:
    entries = default_zoo(small=True)[:3]
    token = CancelToken()
    job = build_zoo_job(tmp_path, entries, token)
    for event in job:
        # cancel while the second model is mid-training
        if event.message.startswith(f"training {entries[1].name}") and event.payload.get("epoch") == 2:
            token.cancel()
            break
    with pytest.raises(Cancelled):
        next(job)
    left = sorted(p.name for p in tmp_path.iterdir())  # no temporary or partial files
    assert left == sorted([f"{entries[0].name}.safetensors", "zoo.json"])
    index = load_zoo_index(tmp_path)
    assert index.names() == [entries[0].name]
    # resuming trains the rest only
    _, events = _build(tmp_path, entries)
    trained = {e.payload["name"] for e in events if e.message.startswith("training")}
    assert trained == {entries[1].name, entries[2].name}


def test_build_rejects_duplicates_and_unknown_family(tmp_path: Path) -> None:
    e = ZooEntry("a", "mlp", {"widths": [4, 4]}, epochs=1)
    with pytest.raises(MalError, match="duplicate"):
        run_job(build_zoo_job(tmp_path, [e, e]))
    with pytest.raises(MalError, match="unknown architecture family"):
        run_job(build_zoo_job(tmp_path, [ZooEntry("b", "transformer", {}, epochs=1)]))
    assert not list(tmp_path.iterdir())


def test_load_zoo_index_errors(tmp_path: Path) -> None:
    with pytest.raises(MalError, match="no zoo index"):
        load_zoo_index(tmp_path)
    (tmp_path / "zoo.json").write_text("{not json")
    with pytest.raises(MalError, match="corrupt zoo index"):
        load_zoo_index(tmp_path)
    (tmp_path / "zoo.json").write_text(json.dumps({"version": 1, "entries": [{"name": "x"}]}))
    with pytest.raises(MalError, match="corrupt zoo index"):
        load_zoo_index(tmp_path)
    escape = {"name": "x", "path": "../x.safetensors", "family": "mlp", "config": {}, "dataset": "digits",
              "seed": 0, "test_accuracy": 0.9}
    (tmp_path / "zoo.json").write_text(json.dumps({"version": 1, "entries": [escape]}))
    with pytest.raises(MalError, match="leaves the zoo folder"):
        load_zoo_index(tmp_path)
    ok = {**escape, "path": "x.safetensors"}
    (tmp_path / "zoo.json").write_text(json.dumps({"version": 1, "entries": [ok]}))
    index = load_zoo_index(tmp_path)
    assert index.path_of("x") == tmp_path / "x.safetensors"
    with pytest.raises(MalError, match="no model named 'y'"):
        index.path_of("y")


# ---------------------------------------------------------------- determinism

_TWO = [ZooEntry("vgg-w4-s0", "vgg", {"stages": [[4, 4], [8, 8]]}, "digits", 0, 2, 1e-2),
        ZooEntry("mlp-w16-s1", "mlp", {"widths": [16, 16]}, "digits-rot90", 1, 3, 1e-2)]


def _hashes(folder: Path) -> dict[str, str]:
    from mal_desktop.core.io.hashing import file_sha256

    return {p.name: file_sha256(p) for p in sorted(folder.glob("*.safetensors"))}


def test_zoo_trains_bit_identically_in_this_process_and_a_fresh_one(tmp_path: Path) -> None:
    """Two models (one with BatchNorm) trained twice here, with different thread counts and RNG
    use around them, and once in a fresh interpreter: the same safetensors bytes each time."""
    import subprocess
    import sys

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        torch.manual_seed(123)
        _build(tmp_path / "a", _TWO)
        torch.randn(1000)  # what ran before must not matter
        torch.set_num_threads(1)
        _build(tmp_path / "b", list(reversed(_TWO)))
        assert torch.get_num_threads() == 1  # the caller's setting is left as it was
    finally:
        torch.set_num_threads(threads)
    code = ("import sys; from pathlib import Path; from tests.core.test_zoo import _TWO, _build;"
            "_build(Path(sys.argv[1]), _TWO)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], check=True,
                   cwd=Path(__file__).resolve().parents[2], timeout=300)
    a, b, c = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert len(a) == 2 and a == b == c
    meta = load_model(tmp_path / "a" / "vgg-w4-s0.safetensors").metadata
    assert meta["trained_under"]["aten_capability"] == "DEFAULT"
    assert meta["trained_under"]["torch"] == torch.__version__


def test_train_job_restores_the_callers_settings() -> None:
    data = load_dataset("digits")
    threads = torch.get_num_threads()
    module = _mlp(8)
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    run_job(train_job(module, data, epochs=1))
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.mkldnn.enabled
    assert torch.equal(torch.get_rng_state(), rng)  # the training's RNG is its own


def test_pinned_worker_runs_portable_kernels() -> None:
    from mal_desktop.core.zoo.pinned import PINNED_ENV, pinned_environ

    import os

    before = {k: os.environ.get(k) for k in PINNED_ENV}
    with pinned_environ():
        assert os.environ["ATEN_CPU_CAPABILITY"] == "default"
    assert {k: os.environ.get(k) for k in PINNED_ENV} == before
