""".safetensors files: header parsing without touching tensor data, tensor reading, writing, and
the mal_desktop metadata that turns a weights file into a rebuildable model.

The header is parsed here rather than by the safetensors library so that a corrupt or truncated
file gets a message saying what is wrong (header length beyond the file, bad JSON, a tensor
ending past the end of the file) instead of a generic library error, and so that plan pre-flight
checks can read shapes and dtypes of large files without reading their data.

mal_desktop metadata (all values strings, as safetensors requires):
    "mal_format": "1"
    "arch": JSON {"kind": "family", "family": ..., "config": {...}}
            | {"kind": "pt2", "program": "/abs/path.pt2", "sha256": ...}
            | {"kind": "factory", "factory": "module:function"}
            | {"kind": "hf", "class": "LlamaForCausalLM", "config": {...}, "tokenizer": ...}
    "input_shape": JSON list of ints (per sample, no batch axis)
    "num_classes": JSON int
    "provenance": JSON object
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError
from ..jsonio import loads_untrusted

MAL_FORMAT = "1"
ARCH_KINDS = ("family", "pt2", "factory", "hf")

# safetensors dtype code -> (torch dtype name, bytes per element). Only codes torch can load.
_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "C64": ("complex64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 1), "F8_E5M2FNUZ": ("float8_e5m2fnuz", 1),
}
# The safetensors library refuses headers above 100 MB; a larger length means a corrupt file.
_MAX_HEADER = 100_000_000


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as described by a safetensors header (no data)."""

    dtype: str  # torch dtype name, e.g. "float32"
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the start of the data section
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A parsed, bounds-checked safetensors header."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int

    def meta_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor as the header declares it, on the meta device: shapes and dtypes, no
        data (a model built from headers alone)."""
        return {k: torch.empty(e.shape, dtype=getattr(torch, e.dtype), device="meta")
                for k, e in self.tensors.items()}


@dataclass(frozen=True)
class MalMetadata:
    """The decoded mal_desktop metadata of a .safetensors model file."""

    arch: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    provenance: dict[str, Any]
    # the permutation spec the file carries ({"key", "spec"}; see graph/file_spec.py): a cache,
    # unverified here; None when absent or unreadable (discovery then runs as for any file)
    spec: dict[str, Any] | None = None



def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Parse and validate the header of a .safetensors file without reading tensor data.

    Parameters:
        path: an existing, non-empty file.
    Returns:
        The header: tensor entries (dtype, shape, offsets) and the string metadata.
    Raises:
        ModelFileError: truncated file, header length beyond the file, invalid JSON, an unknown
            dtype, or a tensor whose bytes do not fit its shape or lie beyond the end of the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelFileError(path, f"truncated safetensors file: {size} bytes, shorter than "
                                       "the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        first = f.read(1)
        if first and first != b"{":  # every header is a JSON object right after its length
            raise ModelFileError(path, "not a safetensors file: it does not begin with a "
                                       "safetensors header (an 8-byte length, then a JSON "
                                       "object); another kind of file with this suffix?")
        f.seek(8)
        if length > size - 8:
            raise ModelFileError(path, f"truncated or corrupt safetensors file: header length "
                                       f"{length} exceeds the file size ({size} bytes)")
        if length > _MAX_HEADER:
            raise ModelFileError(path, f"corrupt safetensors file: header length {length} is "
                                       "implausibly large")
        raw = f.read(length)
    try:
        header = loads_untrusted(raw)
    except ValueError as exc:
        raise ModelFileError(path, f"corrupt safetensors header: not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "corrupt safetensors header: not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelFileError(path, "corrupt safetensors header: __metadata__ must map strings "
                                   "to strings")

    data_start = 8 + length
    data_size = size - data_start
    tensors: dict[str, TensorEntry] = {}
    for name, info in header.items():
        try:
            code, shape_list, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(s) for s in shape_list)
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(path, f"corrupt safetensors header: bad entry for tensor "
                                       f"{name!r}") from None
        if code not in _DTYPES:
            raise ModelFileError(path, f"tensor {name} has unsupported dtype {code!r}")
        dtype, itemsize = _DTYPES[code]
        if any(s < 0 for s in shape) or begin < 0 or end < begin:
            raise ModelFileError(path, f"corrupt safetensors header: bad shape or offsets for "
                                       f"tensor {name}")
        if end > data_size:
            raise ModelFileError(path, f"truncated safetensors file: tensor {name} ends at byte "
                                       f"{data_start + end}, but the file has only {size} bytes")
        if end - begin != math.prod(shape) * itemsize:
            raise ModelFileError(path, f"corrupt safetensors header: tensor {name} of shape "
                                       f"{shape} ({dtype}) needs {math.prod(shape) * itemsize} "
                                       f"bytes, the header gives {end - begin}")
        tensors[name] = TensorEntry(dtype, shape, begin, end)
    return SafetensorsHeader(tensors, dict(metadata), data_start)


def read_safetensors_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read every tensor of a (header-checked) .safetensors file onto the CPU.

    Raises:
        ModelFileError: the safetensors library rejects the file.
    """
    from safetensors import safe_open  # read-only memory map; never writes to the file

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # SafetensorError is not importable under a stable name
        raise ModelFileError(path, f"corrupt safetensors file: {exc}") from None


_CODES = {getattr(torch, name): code for code, (name, _) in _DTYPES.items()}


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor],
                      metadata: dict[str, str],
                      after_tensor: Callable[[torch.Tensor], None] | None = None) -> None:
    """Write tensors and string metadata to ``path`` in the safetensors format.

    Callers pass the atomic temporary file. We write the format ourselves, tensor by tensor,
    into that very file: the library's ``save_file`` writes a temporary file of its own and
    renames it over ours, which left a full-size stray file beside the output after a kill -9
    and gave every saved model mode 0600 instead of the umask's mode. Writing tensor by tensor
    also never holds a second copy of the whole model in memory.

    Names are written in sorted order, data 8-byte aligned after the header as the format
    requires. A tensor on another device is copied to the CPU on its own; a contiguous CPU tensor
    (a memory-mapped one included) is written from its own memory. ``after_tensor`` is called
    with each tensor once written (the caller hands its mapped pages back).
    """
    names = sorted(tensors)
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in _CODES:
            raise TypeError(f"tensor {name}: dtype {t.dtype} cannot be written to safetensors")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            t = tensors[name].detach()
            flat = t.to("cpu").contiguous().reshape(-1)
            if flat.numel():
                f.write(memoryview(flat.view(torch.uint8).numpy()))
            del flat
            if after_tensor is not None:
                after_tensor(t)


def _json_default(value: Any) -> Any:
    """Turn the common non-JSON values of provenance (paths, sets, numpy and torch scalars) into
    JSON; anything else is an error rather than a silently stringified value."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy / torch scalars
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def encode_mal_metadata(arch: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
                        provenance: dict[str, Any], spec: dict[str, Any] | None = None
                        ) -> dict[str, str]:
    """The safetensors metadata of a mal_desktop model file; ``spec``: the model's permutation
    spec record (``graph.file_spec.spec_record``), written when given.

    Raises:
        TypeError, ValueError: a value cannot be encoded as JSON.
    """
    metadata = {
        "mal_format": MAL_FORMAT,
        "format": "pt",  # the key other safetensors tools use to know these are torch tensors
        "arch": json.dumps(arch, sort_keys=True, default=_json_default),
        "input_shape": json.dumps([int(s) for s in input_shape]),
        "num_classes": json.dumps(int(num_classes)),
        "provenance": json.dumps(provenance, sort_keys=True, default=_json_default),
    }
    if spec is not None:
        metadata["spec"] = json.dumps(spec, allow_nan=False)
    return metadata


def _decode(path: Path, metadata: dict[str, str], key: str) -> Any:
    if key not in metadata:
        raise ModelFileError(path, f"corrupt mal_desktop metadata: {key!r} is missing")
    try:
        return loads_untrusted(metadata[key])
    except ValueError as exc:
        raise ModelFileError(path, f"corrupt mal_desktop metadata: {key!r} is not valid "
                                   f"JSON ({exc})") from None


def decode_mal_metadata(path: Path, metadata: dict[str, str]) -> MalMetadata | None:
    """Decode and validate mal_desktop metadata; ``None`` for a plain state-dict file.

    Raises:
        ModelFileError: a newer format, a missing or malformed key, or an unknown architecture kind.
    """
    if "mal_format" not in metadata:
        return None
    if metadata["mal_format"] != MAL_FORMAT:
        raise ModelFileError(path, f"written in mal_desktop model format "
                                   f"{metadata['mal_format']!r}; this version reads format "
                                   f"{MAL_FORMAT!r}")
    arch = _decode(path, metadata, "arch")
    if not isinstance(arch, dict) or arch.get("kind") not in ARCH_KINDS:
        raise ModelFileError(path, f"corrupt mal_desktop metadata: architecture kind must be one "
                                   f"of {', '.join(ARCH_KINDS)}")
    input_shape = _decode(path, metadata, "input_shape")
    if not (isinstance(input_shape, list) and input_shape
            and all(isinstance(s, int) and s > 0 for s in input_shape)):
        raise ModelFileError(path, "corrupt mal_desktop metadata: input_shape must be a list of "
                                   "positive integers")
    num_classes = _decode(path, metadata, "num_classes")
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ModelFileError(path, "corrupt mal_desktop metadata: num_classes must be a positive "
                                   "integer")
    provenance = _decode(path, metadata, "provenance") if "provenance" in metadata else {}
    if not isinstance(provenance, dict):
        raise ModelFileError(path, "corrupt mal_desktop metadata: provenance must be a JSON object")
    return MalMetadata(arch, tuple(input_shape), num_classes, provenance,
                       _optional_spec(metadata))


def _optional_spec(metadata: dict[str, str]) -> dict[str, Any] | None:
    """The stored spec record, or None: it is only a cache (discovery can always run), so one
    that cannot be read is ignored rather than refusing the file."""
    try:
        spec = loads_untrusted(metadata["spec"]) if "spec" in metadata else None
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None
