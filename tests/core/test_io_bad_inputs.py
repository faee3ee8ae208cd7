"""Model files that must be refused with a clear ModelFileError - and never run code."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from mal_desktop.core.errors import ModelFileError
from mal_desktop.core.io import files
from mal_desktop.core.io.files import load_model, read_header, save_model
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.io.pt2_schema import _check_expr
from mal_desktop.core.arch.families import build_model, full_config

HERE = Path(__file__).resolve().parent
MLP = {"input_shape": [1, 4, 4], "num_classes": 3, "widths": [8, 6]}


@pytest.fixture(autouse=True)
def _user_code_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


class Payload:
    """Unpickling this creates ``marker``: the side effect a refused file must never have."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def mlp_model(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = full_config("mlp", MLP)
    return LoadedModel(build_model("mlp", config), {"kind": "family", "family": "mlp",
                                                    "config": config}, (1, 4, 4), 3)


def refused(path: Path, match: str, arch: str | None = None) -> ModelFileError:
    with pytest.raises(ModelFileError, match=match) as err:
        load_model(path, arch=arch)
    assert err.value.path == str(path.resolve())
    assert "\n" not in str(err.value)  # one line for the CLI and the message box
    return err.value


@pytest.fixture(scope="module")
def program_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid program with a dynamic batch axis (so it holds a symbolic shape expression)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    program = torch.export.export(module, (torch.randn(4, 1, 4, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
    path = tmp_path_factory.mktemp("programs") / "valid.pt2"
    torch.export.save(program, path)
    return path


def rewrite_pt2(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None] = lambda n, d: d,
                extra: dict[str, bytes] | None = None) -> Path:
    """Copy a .pt2 archive member by member; ``change(relative_name, data)`` returns the new data
    or None to drop the member; ``extra`` adds members (relative names)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = change(info.filename[len(root) + 1:], zin.read(info.filename))
            if data is not None:
                zout.writestr(info, data)
        for name, data in (extra or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return dst


# ---------------------------------------------------------------------------- not model files


def test_missing_file(tmp_path: Path) -> None:
    refused(tmp_path / "nope.safetensors", "no such file")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.safetensors").mkdir()
    refused(tmp_path / "d.safetensors", "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    for name in ("e.safetensors", "e.pt", "e.pt2"):
        (tmp_path / name).write_bytes(b"")
        refused(tmp_path / name, "file is empty")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    safetensors.torch.save_file({"w": torch.ones(2)}, path)
    refused(path, r"not a model file: expected \.safetensors, \.pt2, \.pt or \.pth")
    with pytest.raises(ModelFileError, match="not a model file"):
        read_header(path)


def test_corrupt_safetensors_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"\xff" * 8 + b"{garbage")
    refused(path, "header length 18446744073709551615 exceeds the file size")
    # a text file renamed: its "header length" was some 7.5e18 bytes, which said nothing useful
    path.write_bytes(b"these are my notes, not weights\n")
    refused(path, "not a safetensors file: it does not begin with a safetensors header")
    path.write_bytes(struct.pack("<Q", 9) + b"{not json")
    refused(path, "not valid JSON")
    path.write_bytes(b"abc")
    refused(path, "shorter than the 8-byte header length")


def test_truncated_safetensors(tmp_path: Path) -> None:
    good = save_model(mlp_model(), tmp_path / "m.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    err = refused(cut, "truncated safetensors file: tensor .* ends at byte")
    assert str(cut.stat().st_size) in str(err)
    with pytest.raises(ModelFileError, match="truncated"):
        read_header(cut)


def test_corrupt_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(bytes(range(256)) * 4)
    refused(path, "refusing to unpickle|corrupt PyTorch file", arch="user_arch:make_mlp")
    zipped = tmp_path / "z.pt"
    torch.save({"w": torch.ones(3)}, zipped)
    zipped.write_bytes(zipped.read_bytes()[:100])
    refused(zipped, "corrupt PyTorch file", arch="user_arch:make_mlp")


def test_a_safetensors_file_named_pt_is_told_so(tmp_path: Path) -> None:
    """It read 'refusing to unpickle: ... (Unsupported operand 64)': the file is no pickle."""
    from safetensors.torch import save_file

    path = tmp_path / "mlp.pt"
    save_file({"w": torch.ones(3)}, str(path))
    message = refused(path, "is a safetensors file, not a PyTorch pickle: give it the "
                            r"\.safetensors extension", arch="user_arch:make_mlp")
    assert "unpickle" not in str(message)


def test_pt2_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "p.pt2"
    path.write_bytes(b"PK\x03\x04 but not really a zip archive")
    refused(path, "not a zip archive")


# ---------------------------------------------------------------------------- code in pickles


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_that_would_run_code_is_refused(legacy: bool, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "extra": Payload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    for arch in ("user_arch:make_mlp", None):  # refused whether or not an architecture is given
        err = refused(path, "refusing to unpickle", arch=arch)
        assert "open" in str(err)
    with pytest.raises(ModelFileError, match="refusing to unpickle"):
        read_header(path)
    assert not marker.exists()


def test_pt2_with_code_in_its_example_inputs(program_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    buf = io.BytesIO()
    torch.save((Payload(marker),), buf)
    evil = rewrite_pt2(program_file, tmp_path / "evil.pt2", lambda n, d: buf.getvalue()
                       if n.startswith("data/sample_inputs/") else d)
    refused(evil, "refusing to unpickle: the program's example inputs are not tensor-only")
    with pytest.raises(ModelFileError, match="refusing to unpickle"):
        read_header(evil)
    assert not marker.exists()


def test_pt2_with_a_pickled_weight(program_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)

    def change(name: str, data: bytes) -> bytes:
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/weights/weight_0":
            return buf.getvalue()
        return data

    refused(rewrite_pt2(program_file, tmp_path / "evil.pt2", change),
            r"refusing to unpickle: weight .* pickled Python object")
    assert not marker.exists()


def test_pt2_with_a_pickled_constant(program_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"

    def change(name: str, data: bytes) -> bytes:
        if name == "data/constants/model_constants_config.json":
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                "use_pickle": True, "tensor_meta": None}}}).encode()
        return data

    evil = rewrite_pt2(program_file, tmp_path / "evil.pt2", change,
                       {"data/constants/opaque_obj_0": pickle.dumps(Payload(marker))})
    refused(evil, r"refusing to unpickle: constant c is stored as a pickled Python object")
    assert not marker.exists()


def test_pt2_with_code_in_a_shape_expression(program_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    payload = f"open('{marker}', 'w')".encode()

    def change(name: str, data: bytes) -> bytes:
        if name == "models/model.json":
            new = data.replace(b"Symbol('s", payload + b" or Symbol('s", 1)
            assert new != data  # the dynamic batch axis is a symbolic expression
            return new
        return data

    refused(rewrite_pt2(program_file, tmp_path / "evil.pt2", change),
            "shape expression that is not plain arithmetic")
    assert not marker.exists()


@pytest.mark.parametrize("expr,ok", [
    ("Symbol('s77', positive=True, integer=True)", True),
    ("Mul(Integer(2), FloorDiv(Symbol('s0', integer=True), Integer(3)))", True),
    ("Max(Integer(1), Add(Symbol('u3', integer=True), Integer(-1)))", True),
    ("Symbol('s0').__class__", False),
    ("exec(chr(105))", False),
    ("__import__('os').system('true')", False),
    ("Symbol('s0', integer=True)[0]", False),
    ("lambda: 0", False),
])
def test_shape_expression_whitelist(expr: str, ok: bool) -> None:
    if ok:
        _check_expr(Path("p.pt2"), expr)
    else:
        with pytest.raises(ModelFileError, match="not plain arithmetic"):
            _check_expr(Path("p.pt2"), expr)


def test_pt2_with_native_code_or_legacy_layout(program_file: Path, tmp_path: Path) -> None:
    aoti = rewrite_pt2(program_file, tmp_path / "aoti.pt2",
                       extra={"data/aotinductor/model/model.so": b"\x7fELF"})
    refused(aoti, "AOTInductor compiled native code")
    legacy = rewrite_pt2(program_file, tmp_path / "legacy.pt2",
                         extra={"data/weights/model.pt": b"\x80\x02}q\x00."})
    refused(legacy, "legacy pickle layout")
    old = rewrite_pt2(program_file, tmp_path / "old.pt2",
                      lambda n, d: None if n == "archive_format" else d)
    refused(old, "not a torch.export program archive")
    with zipfile.ZipFile(tmp_path / "flat.pt2", "w") as z:  # the pre-2.7 layout: top-level members
        z.writestr("version", "8.0")
        z.writestr("serialized_exported_program.json", "{}")
    refused(tmp_path / "flat.pt2", "one root folder")


def test_pt2_with_duplicate_members(program_file: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        dup = rewrite_pt2(program_file, tmp_path / "dup.pt2",
                          extra={"data/sample_inputs/model.pt": b""})
    refused(dup, "duplicate member names")


# ------------------------------------------------------------------------ programs we cannot use


def test_pt2_exported_in_training_mode(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    torch.export.save(torch.export.export(module, (torch.randn(3, 4),)), tmp_path / "t.pt2")
    refused(tmp_path / "t.pt2", "exported in training mode")


def test_pt2_with_two_inputs(tmp_path: Path) -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(a + b)

    program = torch.export.export(Two().eval(), (torch.randn(2, 4), torch.randn(2, 4)))
    torch.export.save(program, tmp_path / "two.pt2")
    refused(tmp_path / "two.pt2", "takes 2 inputs")


# ---------------------------------------------------------------------------- NaN / inf weights


def poisoned_copy(good: Path, dst: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """The same tensors and metadata with some values replaced (save_model refuses NaN itself)."""
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    edit(state)
    safetensors.torch.save_file(state, dst, metadata=meta)
    return dst


def test_nan_and_inf_weights(tmp_path: Path) -> None:
    good = save_model(mlp_model(), tmp_path / "m.safetensors")

    def nan3(state: dict[str, torch.Tensor]) -> None:
        state["layers.0.weight"][0, :3] = float("nan")

    refused(poisoned_copy(good, tmp_path / "nan.safetensors", nan3),
            r"^.*: tensor layers.0.weight has 3 NaN values$")

    def mixed(state: dict[str, torch.Tensor]) -> None:
        state["head.bias"][0] = float("nan")
        state["head.bias"][1:] = float("-inf")
        state["layers.1.bias"][0] = float("inf")

    err = refused(poisoned_copy(good, tmp_path / "mixed.safetensors", mixed),
                  "has 1 NaN and 2 inf values")
    assert "(and 1 more tensor with NaN/inf)" in str(err)

    state = {k: v.clone() for k, v in mlp_model().state().items()}
    state["head.weight"][1, 1] = float("inf")
    torch.save(state, tmp_path / "inf.pt")
    refused(tmp_path / "inf.pt", "tensor head.weight has 1 inf value$", arch="user_arch:make_mlp")


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.complex64, torch.float8_e4m3fn])
def test_weights_that_are_not_floating_point_are_refused_by_name(dtype, tmp_path: Path) -> None:
    good = save_model(mlp_model(), tmp_path / "m.safetensors")
    before = good.read_bytes()

    def cast(state: dict[str, torch.Tensor]) -> None:
        state["layers.0.weight"] = state["layers.0.weight"].to(dtype)

    name = str(dtype).removeprefix("torch.")
    refused(poisoned_copy(good, tmp_path / f"{name}.safetensors", cast),
            rf"tensor layers.0.weight is {name}; mal_desktop merges only floating-point weights "
            r"\(float16, bfloat16, float32, float64\)$")
    # the same weights as a plain state dict with a user architecture
    import user_arch

    state = user_arch.make_mlp().state_dict()
    state["fc2.weight"] = state["fc2.weight"].to(dtype)
    torch.save(state, tmp_path / f"{name}.pt")
    refused(tmp_path / f"{name}.pt", f"tensor fc2.weight is {name}", arch="user_arch:make_mlp")
    assert good.read_bytes() == before  # the input is never touched


def test_half_precision_and_integer_buffers_are_accepted(tmp_path: Path) -> None:
    """float16, bfloat16 and float64 weights load, and an integer buffer where the architecture has one
    (BatchNorm's num_batches_tracked) is no reason to refuse a file."""
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        model = mlp_model()
        model.module.to(dtype)
        path = save_model(model, tmp_path / f"m_{dtype}.safetensors")
        saved = model.state()["layers.0.weight"]
        loaded = load_model(path).state()["layers.0.weight"]
        assert torch.equal(loaded.to(dtype), saved)  # every value survives the round trip
    config = full_config("cnn", {"num_classes": 3, "channels": [4, 4], "hidden": 8})
    cnn = LoadedModel(build_model("cnn", config), {"kind": "family", "family": "cnn",
                                                   "config": config}, (1, 8, 8), 3)
    ints = [k for k, v in cnn.state().items() if not v.is_floating_point()]
    assert ints  # the check below is only meaningful with an integer buffer present
    loaded = load_model(save_model(cnn, tmp_path / "cnn.safetensors"))
    assert all(not loaded.state()[k].is_floating_point() for k in ints)


def test_pt2_with_integer_weights_is_refused(tmp_path: Path) -> None:
    class IntWeight(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3, 4, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w.t()

    module = IntWeight()
    program = torch.export.export(module, (torch.randn(2, 4),))
    program.state_dict["w"] = torch.nn.Parameter(torch.ones(3, 4, dtype=torch.int8),
                                                 requires_grad=False)
    path = tmp_path / "int.pt2"
    torch.export.save(program, str(path))
    refused(path, "tensor w is int8; mal_desktop merges only floating-point weights")


# ---------------------------------------------------------------------------- architectures


def _mlp_file(tmp_path: Path) -> Path:
    import user_arch

    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(user_arch.make_mlp().state_dict(), path)
    return path


def test_plain_state_dict_needs_an_architecture(tmp_path: Path) -> None:
    refused(_mlp_file(tmp_path), r"no architecture: pass --arch module:factory")
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    refused(tmp_path / "w.pt", r"pass --arch module:factory")


@pytest.mark.parametrize("arch,match", [
    ("no_such_module_for_mal_tests:make",
     "cannot import architecture 'no_such_module_for_mal_tests:make': ModuleNotFoundError"),
    ("user_arch:missing_factory", "cannot import architecture 'user_arch:missing_factory': "
                                  "AttributeError"),
    ("user_arch", "must look like 'package.module:function'"),
    ("user_arch:make_broken", "architecture factory 'user_arch:make_broken' failed: RuntimeError: "
                              "factory exploded"),
    ("user_arch:make_not_a_module", "returned a int, not a torch.nn.Module"),
    ("user_arch:make_cnn_without_shape", "starts with a convolution: set input_shape"),
])
def test_bad_factories(arch: str, match: str, tmp_path: Path) -> None:
    refused(_mlp_file(tmp_path), match, arch=arch)


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    import user_arch

    state = user_arch.make_mlp().state_dict()
    state["extra.weight"] = torch.ones(1)
    del state["fc2.bias"]
    state["fc1.weight"] = torch.ones(6, 11)
    torch.save(state, tmp_path / "w.pt")
    err = refused(tmp_path / "w.pt", "weights do not fit architecture 'user_arch:make_mlp'",
                  arch="user_arch:make_mlp")
    text = str(err)
    assert "missing fc2.bias" in text and "unexpected extra.weight" in text
    assert "fc1.weight is (6, 11) in the file, (6, 12) in the architecture" in text


def test_checkpoint_without_a_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "weights": [1.0, 2.0]}, tmp_path / "c.pt")
    refused(tmp_path / "c.pt", "not a state dict: entry 'epoch' is a int",
            arch="user_arch:make_mlp")
    torch.save(torch.ones(3), tmp_path / "t.pt")
    refused(tmp_path / "t.pt", "not a state dict: the file holds a Tensor",
            arch="user_arch:make_mlp")


def _edit_metadata(src: Path, dst: Path, **changes: str) -> Path:
    with safe_open(str(src), framework="pt") as f:
        meta = {**f.metadata(), **changes}
        state = {k: f.get_tensor(k) for k in f.keys()}
    safetensors.torch.save_file(state, dst, metadata=meta)
    return dst


def test_bad_mal_metadata(tmp_path: Path) -> None:
    good = save_model(mlp_model(), tmp_path / "m.safetensors")
    refused(_edit_metadata(good, tmp_path / "v2.safetensors", mal_format="2"),
            "mal_desktop model format '2'; this version reads format '1'")
    arch = json.dumps({"kind": "family", "family": "transformer", "config": {}})
    refused(_edit_metadata(good, tmp_path / "fam.safetensors", arch=arch),
            "unknown architecture family 'transformer'")
    refused(_edit_metadata(good, tmp_path / "json.safetensors", input_shape="[1, 4"),
            "'input_shape' is not valid JSON")
    refused(_edit_metadata(good, tmp_path / "kind.safetensors", arch='{"kind": "onnx"}'),
            "architecture kind must be one of family, pt2, factory")


def test_mal_file_pointing_to_a_missing_or_changed_program(program_file: Path,
                                                           tmp_path: Path) -> None:
    program = tmp_path / "prog.pt2"
    program.write_bytes(program_file.read_bytes())
    weights = save_model(load_model(program), tmp_path / "sub_w.safetensors")
    (tmp_path / "sub").mkdir()
    moved = tmp_path / "sub" / "w.safetensors"
    weights.rename(moved)  # the sibling fallback cannot find prog.pt2 next to it

    program.unlink()
    err = refused(moved, "architecture program .* is missing")
    assert str(program) in str(err)

    # Still a valid program, but not the one the weights were saved against.
    rewrite_pt2(program_file, program, extra={"extra/note.txt": b"re-exported"})
    err = refused(moved, "changed since this file was saved")
    assert str(program) in str(err)


# ---------------------------------------------------------------------------- the file system


def test_symlink_loop_and_unreadable_files_are_named(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.safetensors").symlink_to(tmp_path / "b.safetensors")
    (tmp_path / "b.safetensors").symlink_to(tmp_path / "a.safetensors")
    with pytest.raises(ModelFileError, match=r"a\.safetensors: symbolic link loop$"):
        load_model(tmp_path / "a.safetensors")
    good = save_model(mlp_model(), tmp_path / "m.safetensors")
    # root reads any file, so the permission is denied the way the OS would report it
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == good
                        else real_access(p, mode))
    refused(good, "permission denied: the file is not readable$")


def test_a_small_file_claiming_huge_layers_is_refused_before_allocating(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 15 KB file whose stored config claims 20000-wide layers: the shapes are compared on the
    meta device, so no real module of that size is ever built."""
    good = save_model(mlp_model(), tmp_path / "m.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}
    arch = json.loads(meta["arch"])
    arch["config"]["widths"] = [20000, 20000]
    meta["arch"] = json.dumps(arch)
    huge = tmp_path / "huge.safetensors"
    safetensors.torch.save_file(state, huge, metadata=meta)
    built_on: list[str] = []
    real_build = files.build_model

    def recording_build(family: str, config: dict) -> torch.nn.Module:
        module = real_build(family, config)
        built_on.append(next(module.parameters()).device.type)
        return module

    monkeypatch.setattr(files, "build_model", recording_build)
    refused(huge, r"weights do not fit family 'mlp': shape of layers\.0\.weight is \(")
    assert built_on == ["meta"]


def test_saved_models_get_the_umask_mode_and_stray_temp_files_are_cleaned(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stray = tmp_path / f".m.{dead}-0badc0de.tmp.safetensors"  # a writer killed mid-save
    stray.write_bytes(b"")
    live = tmp_path / f".m.{os.getpid()}-0123abcd.tmp.safetensors"  # one being written now
    live.write_bytes(b"")
    old_umask = os.umask(0o022)
    try:
        path = save_model(mlp_model(), tmp_path / "m.safetensors")
    finally:
        os.umask(old_umask)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert not stray.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "m.safetensors"])
    assert load_model(path).state().keys() == mlp_model().state().keys()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_finite_check_sees_every_nan_and_inf(dtype: torch.dtype) -> None:
    """The one-pass min/max decides only "all finite"; anything else is counted."""
    from mal_desktop.core.io.state_dict_io import check_finite

    big = torch.finfo(dtype).max
    check_finite("m", {"w": torch.full((64,), big, dtype=dtype), "e": torch.zeros(0, dtype=dtype)})
    for values, words in [([1.0, math.nan], "1 NaN"), ([math.inf, -math.inf], "2 inf"),
                          ([math.inf, 2.0], "1 inf")]:
        with pytest.raises(ModelFileError, match=words):
            check_finite("m", {"w": torch.tensor(values + [0.5] * 50, dtype=dtype)})
