"""Sharded safetensors folders: the layout Hugging Face uses for large checkpoints.

    folder/model-00001-of-00003.safetensors ... model-00003-of-00003.safetensors
    folder/model.safetensors.index.json   {"metadata": {"total_size": N, ...},
                                            "weight_map": {state key: shard file name}}

mal writes its metadata (architecture, provenance) into the index's "metadata" and into every
shard's header, so each shard alone still says what it belongs to.

Writing is atomic for the folder as a whole: every shard and the index go into a hidden temporary
folder beside the target, each fsynced, and the folder is then renamed into place (an existing
output folder is swapped out atomically where the platform allows, then removed). A killed
writer leaves its temporary folder, never a half result; the next save removes it. Tensors are
written one at a time (see ``write_safetensors``): memory holds one tensor, never the model.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..jsonio import loads_untrusted
from .atomic import _alive, _fsync_dir, _fsync_file
from .safetensors_io import read_safetensors_header, read_safetensors_tensors, write_safetensors

INDEX = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 2**30  # what Hugging Face uses: files that every filesystem accepts
_SHARD_RE = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")


def is_sharded_folder(path: str | Path) -> bool:
    """True for a folder holding a ``model.safetensors.index.json``."""
    return (Path(path) / INDEX).is_file()


def plan_shards(tensors: Mapping[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Keys grouped into shards of at most ``max_bytes`` each (a larger tensor gets a shard of
    its own), in the state's order so a layer's tensors stay together."""
    shards: list[list[str]] = [[]]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def _temp_folder(target: Path) -> Path:
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"cannot create a temporary folder next to {target}")


def remove_stale_temp_folders(target: Path) -> None:
    """Remove temporary folders of ``target`` left by writers that no longer run (kill -9)."""
    prefix = f".{target.name}."
    for candidate in target.parent.glob(f"{prefix}*-*.tmp"):
        pid_text = candidate.name[len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        shutil.rmtree(candidate, ignore_errors=True)


#: Files a model folder holds besides its weights (Hugging Face's layout); a folder holding
#: anything else is a user's folder, never replaced by a model.
MODEL_FOLDER_FILES = frozenset({INDEX, "model.safetensors", "config.json", "tokenizer.json",
                                "generation_config.json", "tokenizer_config.json",
                                "special_tokens_map.json"})


def _is_model_folder(folder: Path) -> bool:
    """A folder we may replace: model files only (index, shards, weights, config, tokenizer)."""
    names = {p.name for p in folder.iterdir()}
    return bool(names) and all(n in MODEL_FOLDER_FILES or _SHARD_RE.match(n) for n in names)


def check_folder_output(target: Path) -> None:
    """Refuse a target folder that exists and is not a model folder (a user's documents must
    never be replaced by a model), or whose parent is missing or not writable.

    Raises:
        ModelFileError: naming the target.
    """
    if target.exists() and not (target.is_dir() and _is_model_folder(target)):
        raise ModelFileError(target, "exists and is not a model folder (one holding only "
                                     f"{INDEX}, its shards, config and tokenizer); choose a new "
                                     "folder name")
    parent = target.parent
    if not parent.is_dir():
        raise ModelFileError(target, f"the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelFileError(target, f"the folder {parent} is not writable")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_sharded(target: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str],
                  max_shard_bytes: int | None = DEFAULT_SHARD_BYTES, after_tensor=None, *,
                  single_file: str | None = None, extra_files: Mapping[str, str | Path] = {}
                  ) -> Path:
    """Write ``tensors`` as a model folder at ``target``, atomically: shards named
    ``model-0000i-of-0000n.safetensors`` with :data:`INDEX`, plus ``extra_files``.

    Parameters:
        target: the folder to create or replace (see :func:`check_folder_output`).
        tensors: CPU tensors, written one at a time in the mapping's order.
        metadata: string metadata for the index and every shard header.
        max_shard_bytes: the largest shard (a single larger tensor gets its own shard); None:
            one shard.
        after_tensor: called with each tensor once written (to hand back mapped pages).
        single_file: when everything fits in one shard, write it under this name and no index
            (Hugging Face's ``model.safetensors``).
        extra_files: name -> text (written as is) or a file (copied), e.g. config.json.
    Returns:
        ``target``.
    Raises:
        ModelFileError: the target is refused; OSError from the filesystem (the target is then
        untouched and the temporary folder removed).
    """
    check_folder_output(target)
    remove_stale_temp_folders(target)
    groups = plan_shards(tensors, max_shard_bytes or sys.maxsize)
    tmp = _temp_folder(target)
    try:
        weight_map: dict[str, str] = {}
        total = 0
        single = single_file is not None and len(groups) == 1
        for i, keys in enumerate(groups):
            name = single_file if single else f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
            shard = {k: tensors[k] for k in keys}
            write_safetensors(tmp / name, shard, metadata, after_tensor)
            _fsync_file(tmp / name)
            for k in keys:
                weight_map[k] = name
                total += tensors[k].numel() * tensors[k].element_size()
        if not single:
            index = {"metadata": {"total_size": total, **metadata}, "weight_map": weight_map}
            (tmp / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
            _fsync_file(tmp / INDEX)
        for name, content in extra_files.items():
            if isinstance(content, Path):
                shutil.copyfile(content, tmp / name)
            else:
                (tmp / name).write_text(content, encoding="utf-8")
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
        if target.exists():
            if not _exchange(tmp, target):  # two renames: a kill between them leaves no target
                old = _temp_folder(target)
                old.rmdir()
                os.rename(target, old)
                os.rename(tmp, target)
                tmp = old
            shutil.rmtree(tmp, ignore_errors=True)  # the previous output, now at tmp
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        # BaseException on purpose: a cancelled job or Ctrl-C must not leave a stray folder
        if tmp.exists() and tmp != target:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


MAX_INDEX_BYTES = 64 * 2**20  # a 400B-parameter model's index is a few MB


def _shard_path(folder: Path, index: Path, name: object) -> Path:
    """The shard ``name`` of an index: a plain .safetensors file name inside the folder."""
    if (not isinstance(name, str) or not name.endswith(".safetensors") or "/" in name
            or "\\" in name or ".." in name or "\x00" in name or os.path.isabs(name)
            or (len(name) > 1 and name[1] == ":")):
        raise ModelFileError(index, f"shard name {str(name)[:200]!r} is not a .safetensors file "
                                    "name inside the model folder")
    path = folder / name
    if not path.is_file():
        raise ModelFileError(index, f"shard {name} is missing")
    return path


def read_index(folder: Path) -> tuple[dict[str, object], dict[str, Path]]:
    """The index of a sharded folder: (its "metadata", tensor name -> shard path).

    The one reader of :data:`INDEX` for every sharded folder (Hugging Face's and mal's own): read
    as untrusted JSON, at most :data:`MAX_INDEX_BYTES`, shard names confined to the folder.
    Raises:
        ModelFileError: naming the index: unreadable, too large, not JSON, no weight map, a shard
            name outside the folder or a missing shard.
    """
    index = folder / INDEX
    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise ModelFileError(index, f"index larger than {MAX_INDEX_BYTES // 2**20} MiB")
        doc = loads_untrusted(index.read_bytes())
    except ValueError as exc:
        raise ModelFileError(index, f"not a valid JSON index ({exc})") from None
    except OSError as exc:
        raise ModelFileError(index, f"cannot read: {exc.strerror or exc}") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    metadata = doc.get("metadata", {}) if isinstance(doc, dict) else None
    if (not isinstance(weight_map, dict) or not weight_map or not isinstance(metadata, dict)
            or not all(isinstance(k, str) for k in weight_map)):
        raise ModelFileError(index, "index has no 'weight_map' of tensor names to shards")
    shards: dict[str, Path] = {}
    out: dict[str, Path] = {}
    for tensor, name in weight_map.items():
        if name not in shards:
            shards[name] = _shard_path(folder, index, name)
        out[tensor] = shards[name]
    return metadata, out


def read_sharded(folder: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The string metadata and the (memory-mapped) tensors of a sharded folder.

    Raises:
        ModelFileError: a missing or malformed index, a shard outside the folder, a shard that
            is missing or corrupt, or a weight map that disagrees with the shards' headers.
    """
    metadata, weight_map = read_index(folder)
    state: dict[str, torch.Tensor] = {}
    for shard in dict.fromkeys(weight_map.values()):
        header = read_safetensors_header(shard)
        expected = {k for k, v in weight_map.items() if v == shard}
        if set(header.tensors) != expected:
            raise ModelFileError(shard, "does not hold the tensors the index lists for it")
        state.update(read_safetensors_tensors(shard))
    strings = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    return strings, {k: state[k] for k in weight_map}
