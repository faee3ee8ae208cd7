"""Writing Hugging Face model folders: config.json, safetensors weights (one file, or shards with
``model.safetensors.index.json``), tokenizer.json and the files beside it (``COMPANION_FILES``),
in the layout ``from_pretrained`` reads.

The folder is written by the one model-folder writer (``sharded.write_sharded``): whole into a
hidden temporary folder beside the target, then renamed into place, so a reader never sees half
a model; a folder left by a killed writer is removed by the next write; an existing folder is
replaced only when it holds model files alone. Tensors go through our own streaming safetensors
writer (one tensor at a time, no second copy of the model). Tied parameters are written once,
under the name transformers keeps, as ``save_pretrained`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError
from .meta import tie_groups
from .hf_folder import CONFIG_NAME, TOKENIZER_NAME, WEIGHTS_NAME
from .model import LoadedModel
from .sharded import write_sharded


# What a Hugging Face folder holds beside config, weights and tokenizer.json that users of the
# merge need as much: the tokenizer's settings (special tokens, chat template, context length)
# and the generation defaults.
COMPANION_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def write_hf_folder(folder: str | Path, state: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], *, tokenizer: str | Path | None = None,
                    tied: Sequence[Sequence[str]] = (), max_shard_bytes: int | None = None,
                    metadata: Mapping[str, str] | None = None, after_tensor=None,
                    companions: Mapping[str, Path] | None = None) -> Path:
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
        after_tensor: called with each tensor once written (to hand back mapped pages).
        companions: further files copied in under their names (``COMPANION_FILES``).
    Returns:
        The folder.
    Raises:
        ModelFileError: the parent folder is missing, or a write fails (the target is then
            untouched and no temporary folder is left).
    """
    target = Path(folder).expanduser().absolute()
    drop = {name for group in tied for name in list(group)[1:]}
    tensors = {k: state[k].detach().to("cpu").contiguous() for k in sorted(state) if k not in drop}
    extra: dict[str, str | Path] = {
        CONFIG_NAME: json.dumps(dict(config), indent=2, sort_keys=True) + "\n"}
    if tokenizer is not None:
        extra[TOKENIZER_NAME] = Path(tokenizer)
    extra.update({name: Path(path) for name, path in (companions or {}).items()
                  if name in COMPANION_FILES})
    try:
        return write_sharded(target, tensors, {"format": "pt", **dict(metadata or {})},
                             max_shard_bytes, after_tensor, single_file=WEIGHTS_NAME,
                             extra_files=extra)
    except OSError as exc:
        raise ModelFileError(target, f"cannot write: {exc.strerror or exc}") from None


def save_hf_folder(model: LoadedModel, folder: str | Path,
                   max_shard_bytes: int | None = None, metadata: Mapping[str, str] | None = None,
                   after_tensor=None) -> Path:
    """Save a model with a Hugging Face architecture (``arch["kind"] == "hf"``) as a model
    folder: its config (with ``architectures``), weights and tokenizer. ``metadata`` and
    ``after_tensor`` as in :func:`write_hf_folder` (``files.save_model`` stores mal's
    provenance there, which transformers ignores).

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
    # the files beside the tokenizer that say how to use it and how to generate (special
    # tokens, chat template, context length): copied as they are, never read here
    companions = {name: Path(tokenizer).parent / name for name in COMPANION_FILES
                  if tokenizer is not None and (Path(tokenizer).parent / name).is_file()}
    return write_hf_folder(target, model.state(), config, tokenizer=tokenizer,
                           tied=tie_groups(model.module), max_shard_bytes=max_shard_bytes,
                           metadata=metadata, after_tensor=after_tensor, companions=companions)
