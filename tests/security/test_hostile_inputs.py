"""Hostile inputs other than .pt2 programs: safetensors headers, plans, projects and .npz data
sets crafted to exhaust the parser or the memory. Each is refused with one line naming the file
and the problem, reads nothing it should not, leaves the input as it was and no file beside it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from mal_desktop.core.errors import DatasetError, MalError, ModelFileError, PlanError
from mal_desktop.core.evaluate.datasets import load_dataset
from mal_desktop.core.io.files import load_model, read_header
from mal_desktop.core.merge.plan import load_plan
from mal_desktop.core.project.document import ProjectError, load_project

DEEP = "[" * 200_000 + "]" * 200_000  # Python's decoder recurses once per level
# a safetensors header is a JSON object (anything else is refused as not safetensors at all)
DEEP_OBJECT = '{"a":' + "[" * 199_999 + "]" * 199_999 + "}"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def safetensors_bytes(header: str | bytes, data: bytes = b"") -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npz(members: dict[str, bytes]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                z.writestr(name, data)
    return write


def text(content: str | bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return write


SMALL = np.zeros((2, 3), dtype="<f4").tobytes()
CASES: dict[str, tuple[str, Callable[[Path], None], Callable[[Path], object], type, str]] = {
    # name: (file name, writer, loader, error type, expected words)
    "safetensors header nested 200k deep": (
        "deep.safetensors", text(safetensors_bytes(DEEP_OBJECT)), load_model, ModelFileError,
        "nested 200000 levels deep"),
    "safetensors header with a duplicate tensor": (
        "dup.safetensors",
        text(safetensors_bytes('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                               '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)),
        load_model, ModelFileError, "duplicate key 'w'"),
    "safetensors tensor declaring a terabyte": (
        "huge.safetensors",
        text(safetensors_bytes('{"w":{"dtype":"F32","shape":[1000000,1000000],'
                               '"data_offsets":[0,4]}}', b"\0" * 4)),
        read_header, ModelFileError, "w"),
    "mal metadata with a nested architecture": (
        "meta.safetensors",
        text(safetensors_bytes(json.dumps({"__metadata__": {
            "mal_format": "1", "arch": DEEP[:2000] + DEEP[-2000:], "input_shape": "[4]",
            "num_classes": "2", "provenance": "{}"},
            "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}), b"\0" * 4)),
        load_model, ModelFileError, "'arch' is not valid JSON (nested 2000 levels deep"),
    "plan nested 200k deep": (
        "plan.json", text(DEEP), load_plan, PlanError, "nested 200000 levels deep"),
    "plan with a duplicate key": (
        "dup_plan.json", text('{"base": "a.safetensors", "base": "b.safetensors"}'), load_plan,
        PlanError, "duplicate key 'base'"),
    "project nested 200k deep": (
        "deep.malproj", text(DEEP), load_project, ProjectError, "nested 200000 levels deep"),
    "npz declaring 32 GiB in a few bytes": (
        "bomb.npz", npz({"x.npy": npy_header((2**31, 4)) + SMALL,
                         "y.npy": npy_header((2,), "<i8") + b"\0" * 16}),
        lambda p: load_dataset(str(p)), DatasetError, "declares 32.0 GiB"),
    "npz with a garbled array header": (
        "garbled.npz", npz({"x.npy": b"\x93NUMPY\x01\x00\xff\xff{'descr'", "y.npy": b""}),
        lambda p: load_dataset(str(p)), DatasetError, "unreadable header"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    name, write, load, error, words = CASES[case]
    folder = tmp_path / "inputs"
    folder.mkdir()
    path = folder / name
    write(path)
    before = sha(path)
    with pytest.raises(error) as info:
        load(path)
    message = str(info.value)
    assert isinstance(info.value, MalError)
    assert "\n" not in message and len(message) < 400, message
    assert name in message and words in message, message
    assert sha(path) == before
    assert [p.name for p in folder.iterdir()] == [name]


def test_a_legitimate_npz_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, x=np.ones((5, 3), dtype=np.float32), y=np.arange(5) % 2)
    data = load_dataset(str(path))
    assert tuple(data.x_test.shape) == (5, 3)
    assert torch.equal(data.y_test, torch.tensor([0, 1, 0, 1, 0]))
