"""Writing Hugging Face model folders: config.json, safetensors weights (one file, or shards with
``model.safetensors.index.json``) and tokenizer.json, in the layout ``from_pretrained`` reads.

The folder is written whole into a hidden temporary folder beside the target and then renamed
into place, so a reader never sees half a model; a folder left by a killed writer is removed by
the next write. Tensors go through our own streaming safetensors writer (one tensor at a time,
no second copy of the model). Tied parameters are written once, under the name transformers
keeps, as ``save_pretrained`` does.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError
from .atomic import _alive, _fsync_dir, _fsync_file
from .hf_config import tie_groups
from .hf_folder import CONFIG_NAME, INDEX_NAME, TOKENIZER_NAME, WEIGHTS_NAME
from .model import LoadedModel
from .safetensors_io import write_safetensors


def _shards(state: Mapping[str, torch.Tensor], max_shard_bytes: int | None) -> list[list[str]]:
    """Tensor names per shard, in sorted order, each shard at most ``max_shard_bytes`` (a single
    larger tensor gets a shard of its own)."""
    names = sorted(state)
    if not max_shard_bytes:
        return [names]
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _stale(parent: Path, name: str) -> None:
    """Remove temporary folders of ``name`` left by writers that no longer run."""
    for candidate in parent.glob(f".{name}.*-*.tmpdir"):
        pid = candidate.name[len(name) + 2:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def write_hf_folder(folder: str | Path, state: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], *, tokenizer: str | Path | None = None,
                    tied: Sequence[Sequence[str]] = (), max_shard_bytes: int | None = None,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write a model folder atomically (replacing an existing one).

    Parameters:
        folder: the target folder; its parent must exist.
        state: CPU tensors by state key; tied names may all be present (only the first of each
            ``tied`` group is written).
        config: the config.json content (must name ``architectures`` and ``model_type``).
        tokenizer: a tokenizer.json file copied into the folder.
        max_shard_bytes: split the weights into shards of at most this size with an index;
            None writes one ``model.safetensors``.
        metadata: string metadata stored in every shard's header ("format": "pt" is added).
    Returns:
        The folder.
    Raises:
        ModelFileError: the parent folder is missing, or a write fails (the target is then
            untouched and no temporary folder is left).
    """
    target = Path(folder).expanduser().absolute()
    if not target.parent.is_dir():
        raise ModelFileError(target, f"the folder {target.parent} does not exist")
    drop = {name for group in tied for name in list(group)[1:]}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in drop}
    shards = _shards(tensors, max_shard_bytes)
    meta = {"format": "pt", **dict(metadata or {})}
    _stale(target.parent, target.name)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmpdir")
    try:
        tmp.mkdir()
        files = ([WEIGHTS_NAME] if len(shards) == 1 else
                 [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
        for name, keys in zip(files, shards):
            write_safetensors(tmp / name, {k: tensors[k] for k in keys}, meta)
            _fsync_file(tmp / name)
        if len(shards) > 1:
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {"metadata": {"total_size": total},
                     "weight_map": {k: f for f, keys in zip(files, shards) for k in keys}}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (tmp / CONFIG_NAME).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / TOKENIZER_NAME)
        _swap_in(tmp, target)
    except BaseException as exc:
        # BaseException on purpose: a cancelled job must not leave a stray folder
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ModelFileError(target, f"cannot write: {exc.strerror or exc}") from None
        raise
    return target


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename the finished folder into place; an existing target is moved aside first and
    removed after (a directory cannot be replaced by one rename)."""
    old = None
    if target.exists() or target.is_symlink():
        old = tmp.with_name(tmp.name.removesuffix(".tmpdir") + ".old.tmpdir")
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_hf_folder(model: LoadedModel, folder: str | Path,
                   max_shard_bytes: int | None = None) -> Path:
    """Save a model with a Hugging Face architecture (``arch["kind"] == "hf"``) as a model
    folder: its config (with ``architectures``), weights and tokenizer.

    Raises:
        ModelFileError: not a Hugging Face architecture, the target is the model's own input
            folder (or holds it), or a write failure.
    """
    target = Path(folder).expanduser().absolute()
    arch = model.arch if isinstance(model.arch, dict) else {}
    if arch.get("kind") != "hf":
        raise ModelFileError(target, "only models with a Hugging Face architecture are saved "
                                     "as model folders; save others as .safetensors")
    if model.path is not None:
        source = Path(model.path).resolve()
        if target.resolve() == source or target.resolve() in source.parents:
            raise ModelFileError(target, "refusing to overwrite the model's own input folder; "
                                         "save under another name")
    config = {**arch["config"], "architectures": [arch["class"]]}
    tokenizer = arch.get("tokenizer")
    if tokenizer is not None and not Path(tokenizer).is_file():
        tokenizer = None
    return write_hf_folder(target, model.state(), config, tokenizer=tokenizer,
                           tied=tie_groups(model.module), max_shard_bytes=max_shard_bytes)
