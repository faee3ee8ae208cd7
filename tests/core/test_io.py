"""Model files: round trips of every form, headers, hashes, atomic saves, read-only loading."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from mal_desktop.core.errors import ModelFileError
from mal_desktop.core.io.files import (atomic_write, atomic_write_text, file_sha256, load_model,
                                       read_header, save_model)
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.io.pt2_io import program_batch_size
from mal_desktop.core.progress import Cancelled
from mal_desktop.core.arch import families
from mal_desktop.core.arch.families import build_model, full_config

HERE = Path(__file__).resolve().parent
SMALL = {
    "mlp": {"input_shape": [1, 4, 4], "num_classes": 3, "widths": [8, 6]},
    "cnn": {"input_shape": [1, 8, 8], "num_classes": 3, "channels": [4, 6], "hidden": 8},
    "vgg": {"input_shape": [1, 8, 8], "num_classes": 3, "stages": [[4], [6]]},
    "resnet": {"input_shape": [1, 8, 8], "num_classes": 3, "width": 4, "blocks": 1},
    "mixer": {"input_shape": [1, 8, 8], "num_classes": 3, "patch": 4, "dim": 8, "depth": 1,
              "token_hidden": 4, "channel_hidden": 8},
}


@pytest.fixture(autouse=True)
def _user_code_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))  # "user_arch:make_mlp" stands for the user's module


def family_model(family: str, seed: int = 0) -> LoadedModel:
    """A small family model with random weights and non-default norm statistics."""
    torch.manual_seed(seed)
    config = full_config(family, SMALL[family])
    module = build_model(family, config)
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand(buf.shape) + 0.5)
    return LoadedModel(module, {"kind": "family", "family": family, "config": config},
                       tuple(config["input_shape"]), config["num_classes"],
                       metadata={"name": family, "seed": seed})


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def export_to(module: nn.Module, example: torch.Tensor, path: Path, dynamic: bool) -> Path:
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=shapes)
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="module")
def cnn_pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A family CNN exported with a dynamic batch axis (one export shared by the module's tests)."""
    model = family_model("cnn", seed=1).module
    path = tmp_path_factory.mktemp("pt2") / "cnn.pt2"
    return export_to(model, torch.randn(4, 1, 8, 8), path, dynamic=True), model


# ---------------------------------------------------------------------------- mal safetensors


@pytest.mark.parametrize("family", sorted(SMALL))
def test_family_round_trip_is_bit_exact(family: str, tmp_path: Path) -> None:
    model = family_model(family)
    target = tmp_path / f"{family}.safetensors"
    assert save_model(model, target, {"dataset": "digits"}) == target

    loaded = load_model(target)
    x = model.example_input(batch=5)
    assert torch.equal(loaded.module(x), model.module(x))
    assert loaded.state().keys() == model.state().keys()
    assert all(torch.equal(loaded.state()[k], v) for k, v in model.state().items())
    assert loaded.arch == model.arch
    assert loaded.input_shape == model.input_shape and loaded.num_classes == 3
    assert loaded.form == "mal-safetensors" and loaded.path == target.resolve()
    assert loaded.sha256 is None  # hashing reads the whole file: done when a merge is saved
    assert loaded.content_sha256() == hashlib.sha256(target.read_bytes()).hexdigest()
    assert loaded.metadata == {"name": family, "seed": 0, "dataset": "digits"}
    assert loaded.program is None and not loaded.module.training


def test_saved_metadata_is_strings_with_json_values(tmp_path: Path) -> None:
    model = family_model("mlp")
    path = save_model(model, tmp_path / "m.safetensors", {"source": tmp_path / "x.npz"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["mal_format"] == "1"
    assert json.loads(meta["arch"]) == model.arch
    assert json.loads(meta["input_shape"]) == [1, 4, 4] and json.loads(meta["num_classes"]) == 3
    assert json.loads(meta["provenance"])["source"] == str(tmp_path / "x.npz")


def test_save_clones_shared_and_non_contiguous_tensors(tmp_path: Path) -> None:
    import user_arch

    module = user_arch.make_tied()
    with torch.no_grad():
        module.a.bias.copy_(torch.arange(4.0))
    model = LoadedModel(module, {"kind": "factory", "factory": "user_arch:make_tied"}, (4,), 4)
    path = save_model(model, tmp_path / "tied.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    loaded = load_model(path, arch="user_arch:make_tied")
    x = torch.randn(3, 4)
    assert torch.equal(loaded.module(x), module(x))

    transposed = nn.Linear(3, 5)
    transposed.weight = nn.Parameter(torch.randn(3, 5).t())  # non-contiguous parameter
    model = LoadedModel(transposed, {"kind": "factory", "factory": "m:f"}, (3,), 5)
    path = save_model(model, tmp_path / "t.safetensors")
    assert torch.equal(safetensors.torch.load_file(path)["weight"], transposed.weight)


def test_save_refuses_the_models_own_input_file_and_other_extensions(tmp_path: Path) -> None:
    path = save_model(family_model("mlp"), tmp_path / "m.safetensors")
    loaded = load_model(path)
    before = snapshot(path)
    with pytest.raises(ModelFileError, match="own input file"):
        save_model(loaded, path)
    assert snapshot(path) == before
    with pytest.raises(ModelFileError, match=r"\.safetensors"):
        save_model(loaded, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_save_refuses_nan_weights(tmp_path: Path) -> None:
    model = family_model("mlp")
    with torch.no_grad():
        model.module.head.bias[0] = float("nan")
    with pytest.raises(ModelFileError, match="tensor head.bias has 1 NaN value$"):
        save_model(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- .pt2 programs


def test_pt2_round_trip(cnn_pt2: tuple[Path, nn.Module]) -> None:
    path, source = cnn_pt2
    loaded = load_model(path)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))  # not the export batch
    assert torch.equal(loaded.module(x), source(x))
    assert loaded.form == "pt2" and loaded.input_shape == (1, 8, 8) and loaded.num_classes == 3
    assert loaded.arch == {"kind": "pt2", "program": str(path.resolve()),
                           "sha256": file_sha256(path)}
    assert loaded.sha256 == file_sha256(path)
    assert isinstance(loaded.program, torch.export.ExportedProgram)
    assert program_batch_size(loaded.program) is None
    loaded.module.eval()  # ExportedProgram.module() raises here; ours is usable like any model
    assert not loaded.module.training
    with pytest.raises(NotImplementedError):
        loaded.module.train()


def test_pt2_of_a_user_module_needs_no_registry(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    class Gated(nn.Module):  # user code that mal_desktop has never seen
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(6)
            self.gate = nn.Linear(6, 6)
            self.value = nn.Linear(6, 6)
            self.out = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.norm(x)
            return self.out(x + torch.sigmoid(self.gate(h)) * self.value(h))

    torch.manual_seed(0)
    module = Gated().eval()
    path = export_to(module, torch.randn(2, 6), tmp_path / "gated.pt2", dynamic=False)
    monkeypatch.setattr(families, "FAMILIES", {})  # no architecture registry at all
    loaded = load_model(path)
    x = torch.randn(2, 6)
    assert torch.equal(loaded.module(x), module(x))
    assert (loaded.input_shape, loaded.num_classes) == ((6,), 4)
    assert program_batch_size(loaded.program) == 2  # static export: only batches of 2 run


def test_pt2_input_shape_from_graph_when_example_inputs_missing(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    program = torch.export.export(module, (torch.randn(2, 5),))
    program.example_inputs = None
    torch.export.save(program, tmp_path / "p.pt2")
    loaded = load_model(tmp_path / "p.pt2")
    assert loaded.program.example_inputs is None
    assert (loaded.input_shape, loaded.num_classes) == ((5,), 2)


def test_pt2_weights_saved_as_safetensors_reload_through_the_program(
        cnn_pt2: tuple[Path, nn.Module], tmp_path: Path) -> None:
    path, _ = cnn_pt2
    base = load_model(path)
    changed = base.with_state({k: v + 0.25 if v.is_floating_point() else v
                               for k, v in base.state().items()})
    saved = save_model(changed, tmp_path / "merged.safetensors", {"plan": "p1"})
    loaded = load_model(saved)
    x = torch.randn(3, 1, 8, 8)
    assert loaded.form == "mal-safetensors" and loaded.metadata == {"plan": "p1"}
    assert loaded.arch == base.arch
    assert torch.equal(loaded.module(x), changed.module(x))
    assert torch.equal(loaded.program.module()(x), changed.module(x))  # program carries them too
    assert not torch.equal(loaded.module(x), base.module(x))


def test_moved_program_is_found_next_to_the_weights(cnn_pt2: tuple[Path, nn.Module],
                                                    tmp_path: Path) -> None:
    original, _ = cnn_pt2
    program = shutil.copy(original, tmp_path / "cnn.pt2")
    weights = save_model(load_model(program), tmp_path / "w.safetensors")
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(program, moved / "cnn.pt2")
    shutil.move(weights, moved / "w.safetensors")
    loaded = load_model(moved / "w.safetensors")
    assert loaded.arch["program"] == str(moved / "cnn.pt2")


# ---------------------------------------------------------------------------- plain state dicts


def _mlp_state(seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import user_arch

    torch.manual_seed(seed)
    module = user_arch.make_mlp().eval()
    return module, {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("wrapper", ["plain", "state_dict", "model", "dataparallel"])
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_torch_state_dict_with_user_factory(wrapper: str, suffix: str, tmp_path: Path) -> None:
    module, state = _mlp_state(seed=4)
    payload: object = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 7, "lr": 0.1},
        "model": {"model": state, "optimizer": {"step": 3}},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
    }[wrapper]
    path = tmp_path / f"w{suffix}"
    torch.save(payload, path)
    loaded = load_model(path, arch="user_arch:make_mlp")
    x = torch.randn(4, 12)
    assert torch.equal(loaded.module(x), module(x))
    assert loaded.form == "state-dict"
    assert loaded.arch == {"kind": "factory", "factory": "user_arch:make_mlp"}
    assert (loaded.input_shape, loaded.num_classes) == ((12,), 3)  # first Linear; probe output


def test_plain_safetensors_with_conv_factory_declaring_its_input(tmp_path: Path) -> None:
    import user_arch

    torch.manual_seed(2)
    module = user_arch.make_cnn().eval()
    path = tmp_path / "cnn.safetensors"
    safetensors.torch.save_file(module.state_dict(), path, metadata={"origin": "elsewhere"})
    loaded = load_model(path, arch="user_arch:make_cnn")
    x = torch.randn(3, 1, 6, 6)
    assert torch.equal(loaded.module(x), module(x))
    assert (loaded.input_shape, loaded.num_classes) == ((1, 6, 6), 5)
    assert loaded.metadata == {"file_metadata": {"origin": "elsewhere"}}


def test_factory_architecture_in_mal_file_needs_the_opt_in(tmp_path: Path) -> None:
    module, state = _mlp_state(seed=5)
    torch.save(state, tmp_path / "w.pt")
    plain = load_model(tmp_path / "w.pt", arch="user_arch:make_mlp")
    saved = save_model(plain, tmp_path / "w.safetensors", {"note": "from a .pt"})
    with pytest.raises(ModelFileError, match="--arch module:factory") as err:
        load_model(saved)
    assert "user_arch:make_mlp" in str(err.value)
    loaded = load_model(saved, arch="user_arch:make_mlp")
    x = torch.randn(2, 12)
    assert torch.equal(loaded.module(x), module(x))
    assert loaded.form == "mal-safetensors" and loaded.input_shape == (12,)
    assert loaded.metadata == {"note": "from a .pt"}


# ---------------------------------------------------------------------------- headers and hashes


def test_read_header_of_mal_safetensors_does_not_read_tensor_data(tmp_path: Path) -> None:
    model = family_model("cnn")
    path = save_model(model, tmp_path / "c.safetensors", {"acc": 0.9})
    with torch.no_grad():
        model.module.head.weight.fill_(float("nan"))
    bad = tmp_path / "nan.safetensors"  # header intact, data poisoned
    state = {k: v.contiguous() for k, v in model.state().items()}
    with safe_open(str(path), framework="pt") as f:
        safetensors.torch.save_file(state, bad, metadata=f.metadata())

    header = read_header(bad)  # would fail if it read the data (see the NaN check below)
    assert header.form == "mal-safetensors" and header.arch == model.arch
    assert header.input_shape == (1, 8, 8) and header.num_classes == 3
    assert header.metadata == {"name": "cnn", "seed": 0, "acc": 0.9}
    assert header.shapes == {k: tuple(v.shape) for k, v in model.state().items()}
    assert header.dtypes["head.weight"] == "float32"
    assert header.dtypes["features.0.1.num_batches_tracked"] == "int64"
    assert header.num_parameters == sum(v.numel() for v in model.state().values())
    assert header.nbytes == sum(v.numel() * v.element_size() for v in model.state().values())
    with pytest.raises(ModelFileError, match="tensor head.weight has 24 NaN values"):
        load_model(bad)


def test_read_header_of_other_forms(cnn_pt2: tuple[Path, nn.Module], tmp_path: Path) -> None:
    module, state = _mlp_state()
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    safetensors.torch.save_file(state, tmp_path / "w.safetensors")
    for name in ("w.pt", "w.safetensors"):
        header = read_header(tmp_path / name)
        assert header.form == "state-dict" and header.arch is None and header.input_shape is None
        assert header.shapes == {"fc1.weight": (6, 12), "fc1.bias": (6,), "fc2.weight": (3, 6),
                                 "fc2.bias": (3,)}
    path, source = cnn_pt2
    header = read_header(path)
    assert header.form == "pt2" and header.arch["kind"] == "pt2"
    assert (header.input_shape, header.num_classes) == ((1, 8, 8), 3)
    assert header.shapes == {k: tuple(v.shape) for k, v in source.state_dict().items()}


def test_file_sha256_streams_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(2_500_000)
    (tmp_path / "blob.pt").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(tmp_path / "blob.pt") == expected
    assert file_sha256(tmp_path / "blob.pt", chunk_size=4096) == expected


# ---------------------------------------------------------------------------- atomic writes


def test_atomic_write_text_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_text(target, "one\r\n")
    assert target.read_bytes() == b"one\r\n"
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    reference = tmp_path / "reference"
    reference.write_text("x")  # what a plain open() gives under this umask
    assert target.stat().st_mode == reference.stat().st_mode


@pytest.mark.parametrize("error", [RuntimeError("disk full"), Cancelled(), KeyboardInterrupt()])
def test_atomic_write_failure_leaves_nothing(error: BaseException, tmp_path: Path) -> None:
    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"half a fi")
        raise error

    with pytest.raises(type(error)):
        atomic_write(tmp_path / "new.bin", writer)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "old.bin").write_bytes(b"old content")
    with pytest.raises(type(error)):
        atomic_write(tmp_path / "old.bin", writer)
    assert [p.name for p in tmp_path.iterdir()] == ["old.bin"]
    assert (tmp_path / "old.bin").read_bytes() == b"old content"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), Cancelled()])
def test_save_model_failure_mid_write_leaves_no_file(error: BaseException, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_write(path: Path, tensors: dict, metadata: dict, *rest) -> None:
        Path(path).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")  # partial file
        raise error

    monkeypatch.setattr("mal_desktop.core.io.files.write_safetensors", failing_write)
    expected = ModelFileError if isinstance(error, OSError) else Cancelled
    with pytest.raises(expected):
        save_model(family_model("mlp"), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- inputs stay untouched


def test_loading_never_modifies_input_files(cnn_pt2: tuple[Path, nn.Module],
                                            tmp_path: Path) -> None:
    _, state = _mlp_state()
    program = Path(shutil.copy(cnn_pt2[0], tmp_path / "p.pt2"))
    paths = {
        "mal": save_model(family_model("resnet"), tmp_path / "mal.safetensors"),
        "plain": tmp_path / "plain.safetensors",
        "pt": tmp_path / "w.pt",
        "pt2": program,
        "mal-pt2": save_model(load_model(program), tmp_path / "mal_pt2.safetensors"),
    }
    safetensors.torch.save_file(state, paths["plain"])
    torch.save(state, paths["pt"])
    before = {name: snapshot(p) for name, p in paths.items()}
    before_dir = sorted(p.name for p in tmp_path.iterdir())
    for name, p in paths.items():
        arch = "user_arch:make_mlp" if name in ("plain", "pt") else None
        load_model(p, arch=arch)
        read_header(p)
    assert {name: snapshot(p) for name, p in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == before_dir
