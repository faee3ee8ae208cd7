"""Hugging Face model folders: ``config.json`` + ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``) + ``tokenizer.json``.

Opening a folder runs no code from it: the architecture comes from transformers' own classes
(:mod:`.hf_config`), every safetensors header is parsed by our reader, and the weights are
memory-mapped (safetensors ``safe_open``) and assigned into a model built on the meta device
(``load_state_dict(assign=True)``), so the tensors are the file's pages, not a second copy.
:func:`read_hf_header` gives shapes, dtypes and sizes from the headers alone: no tensor data is
read, so a 7B-class folder describes itself in about the time transformers takes to import.

Refused with one line naming the folder or file: shard names with path separators or ``..``
(an index must not reach outside its folder), a tensor listed in no shard or in two, an index
tensor its shard does not hold, pickled weights (``pytorch_model.bin``), and weights that do
not fit the architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from .hashing import folder_files_sha256
from .hf_config import build_module, hf_arch, input_spec, materialise_buffers, read_config_file
from .meta import retie, tie_groups
from .model import LoadedModel
from .safetensors_io import SafetensorsHeader, decode_mal_metadata, read_safetensors_header
from .sharded import read_index
from .state_dict_io import check_finite, check_shapes, check_weight_dtypes

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_NAME = "tokenizer.json"
FORM = "hf-folder"


def hf_folder_of(path: str | Path) -> Path | None:
    """The model folder ``path`` names: a folder holding ``config.json``, or that config.json
    itself; None for anything else (a model file, a folder without a config)."""
    p = Path(path).expanduser()
    if p.name == CONFIG_NAME and p.is_file():
        return p.absolute().parent
    if p.is_dir() and (p / CONFIG_NAME).is_file():
        return p.absolute()
    return None


@dataclass(frozen=True)
class FolderWeights:
    """The safetensors files of a folder and where each tensor lives (headers only).

    files: the weight files, in index order. headers: their parsed headers. where: tensor
    name -> the file holding it.
    """

    files: tuple[Path, ...]
    headers: dict[Path, SafetensorsHeader]
    where: dict[str, Path]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: self.headers[f].tensors[k].shape for k, f in self.where.items()}

    def dtypes(self) -> dict[str, str]:
        return {k: self.headers[f].tensors[k].dtype for k, f in self.where.items()}


def _read_index(folder: Path) -> dict[str, Path]:
    """tensor name -> shard path, from ``model.safetensors.index.json`` (see sharded.read_index)."""
    return read_index(folder)[1]


def read_weights(folder: Path) -> FolderWeights:
    """The weight files of ``folder`` with their headers (no tensor data is read).

    ``model.safetensors`` when present, else the shards of ``model.safetensors.index.json``.
    Raises:
        ModelFileError: no safetensors weights, a bad index or shard name, a tensor listed in a
            shard that lacks it or found in two shards, or a corrupt header.
    """
    single = folder / WEIGHTS_NAME
    if single.is_file():
        header = read_safetensors_header(single)
        return FolderWeights((single,), {single: header}, {k: single for k in header.tensors})
    if not (folder / INDEX_NAME).is_file():
        pickled = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")
                   if (folder / n).exists()]
        extra = (f"; {pickled[0]} holds pickled weights, which are never read: convert the "
                 "checkpoint to safetensors") if pickled else ""
        raise ModelFileError(folder, f"no {WEIGHTS_NAME} or {INDEX_NAME} in the model "
                                     f"folder{extra}")
    listed = _read_index(folder)
    files = tuple(dict.fromkeys(listed.values()))
    headers = {f: read_safetensors_header(f) for f in files}
    where: dict[str, Path] = {}
    for f in files:
        for name in headers[f].tensors:
            if name in where:
                raise ModelFileError(f, f"tensor {name} is also in {where[name].name}")
            where[name] = f
    for name, f in listed.items():
        if where.get(name) != f:
            raise ModelFileError(folder / INDEX_NAME, f"the index puts tensor {name} in "
                                                      f"{f.name}, which does not hold it")
    return FolderWeights(files, headers, where)


def _tokenizer(folder: Path) -> Path | None:
    path = folder / TOKENIZER_NAME
    return path if path.is_file() else None


def folder_files(weights: FolderWeights) -> tuple[str, ...]:
    """The files that define a model folder (config, index, weights, tokenizer), by name: what
    its content hash covers."""
    return tuple(sorted({CONFIG_NAME, INDEX_NAME, TOKENIZER_NAME,
                         *(f.name for f in weights.files)}))


def folder_sha256(folder: Path, weights: FolderWeights | None = None) -> str:
    """Content hash of a model folder: every file that defines the model (config, index,
    weights, tokenizer) by name and sha256, so renaming the folder keeps it, editing one file
    changes it. Each file's hash is cached per file version (``cached_file_sha256``): a folder
    of many GB is hashed once, not at every open.

    Raises:
        ModelFileError: as :func:`read_weights`. OSError: a file cannot be read.
    """
    return folder_files_sha256(folder, folder_files(weights or read_weights(folder)))


@dataclass
class _Folder:
    """A folder opened as far as the headers go: config, weights layout, meta module."""

    path: Path
    config: dict[str, Any]
    weights: FolderWeights
    module: nn.Module  # on the meta device
    groups: list[list[str]]  # tied names, the kept one first
    expected: dict[str, torch.Tensor]  # the module's state on the meta device


def _open(path: Path) -> _Folder:
    folder = _resolve(hf_folder_of(path) or path)
    config = read_config_file(folder / CONFIG_NAME)
    weights = read_weights(folder)
    module = build_module(folder / CONFIG_NAME, config, device="meta")
    return _Folder(folder, config, weights, module, tie_groups(module), module.state_dict())


def _resolve(path: Path) -> Path:
    try:
        return path.resolve(strict=True)
    except FileNotFoundError:
        raise ModelFileError(path, "no such folder") from None
    except (OSError, RuntimeError) as exc:
        raise ModelFileError(path, f"cannot open: {getattr(exc, 'strerror', None) or exc}") \
            from None


def complete_ties(groups: list[list[str]], present: dict[str, Any]) -> dict[str, Any]:
    """``present`` (name -> tensor, shape or dtype) with every tied name the file leaves out
    filled from the one it holds (transformers saves one name per tied group)."""
    out = dict(present)
    for names in groups:
        held = [n for n in names if n in present]
        for name in names:
            if name not in out and held:
                out[name] = present[held[0]]
    return out


def tied_state(where: Path, groups: list[list[str]], state: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    """``state`` with tied names filled in. A file holding two different values for one tied
    parameter is refused: transformers would silently untie them, we would silently pick one.

    Raises:
        ModelFileError: naming the two tensors.
    """
    for names in groups:
        held = [n for n in names if n in state]
        for other in held[1:]:
            a, b = state[held[0]], state[other]
            if a.shape == b.shape and not torch.equal(a, b.to(a.dtype)):
                raise ModelFileError(where, f"{held[0]} and {other} are tied in the config "
                                            "but differ in the weights")
    return complete_ties(groups, state)


class _Shape:
    """Stands in for a tensor in shape checks (``check_shapes`` reads ``.shape``)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def read_hf_header(path: Path) -> dict[str, Any]:
    """Describe a model folder from its config and safetensors headers; no tensor is read.

    Returns the ``ModelHeader`` fields: path, form, shapes and dtypes (per state key of the
    model, tied names included), arch, input_shape, num_classes, metadata.
    Raises:
        ModelFileError: anything :func:`load_hf_folder` refuses before reading tensors.
    """
    folder = _open(path)
    shapes = complete_ties(folder.groups, folder.weights.shapes())
    check_shapes(folder.path, folder.expected, {k: _Shape(v) for k, v in shapes.items()},
                 f"architecture {type(folder.module).__name__}")
    dtypes = complete_ties(folder.groups, folder.weights.dtypes())
    input_shape, num_classes, _, _ = input_spec(folder.path, folder.module, folder.config)
    tokenizer = _tokenizer(folder.path)
    arch = hf_arch(type(folder.module).__name__, folder.config, tokenizer, None)
    # tied names count once here: what the files hold, not the state keys
    stored = sum(math.prod(shape) for shape in folder.weights.shapes().values())
    metadata = {"files": [f.name for f in folder.weights.files], "stored_parameters": stored}
    return {"path": folder.path, "form": FORM, "shapes": shapes, "dtypes": dtypes,
            "arch": arch, "input_shape": input_shape, "num_classes": num_classes,
            "metadata": metadata}


def _map_tensors(weights: FolderWeights) -> dict[str, torch.Tensor]:
    """Every tensor of the folder, memory-mapped (private, copy-on-write: an in-place edit of
    a weight never reaches the file)."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for f in weights.files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as handle:
                for name in weights.headers[f].tensors:
                    state[name] = handle.get_tensor(name)
        except Exception as exc:  # SafetensorError is not importable under a stable name
            raise ModelFileError(f, f"corrupt safetensors file: {exc}") from None
    return state


def load_state_into_meta(where: Path, module: nn.Module, state: dict[str, torch.Tensor],
                         groups: list[list[str]], what: str) -> nn.Module:
    """Assign ``state`` (every key of the module, tied names included) to a module built on
    the meta device: the parameters become these very tensors (no copy), ties are restored and
    the buffers checkpoints leave out are computed.

    Raises:
        ModelFileError: missing, unexpected or mis-shaped keys, or weights of a dtype
            mal_desktop does not merge.
    """
    expected = module.state_dict()
    check_shapes(where, expected, state, what)
    check_weight_dtypes(where, state, expected)
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except Exception as exc:
        raise ModelFileError(where, f"weights do not fit {what}: "
                                    f"{str(exc).splitlines()[0]}") from None
    retie(module, groups)
    materialise_buffers(where, module)
    return module.eval()


def load_hf_folder(path: str | Path, weights: bool = True) -> LoadedModel:
    """Open a Hugging Face model folder (or its config.json) as a runnable model.

    weights: False builds it from the headers alone (``files.open_from_headers``): the
        parameters stay on the meta device with the stored shapes and dtypes, no tensor is read
        and nothing is checked for NaN; only the rotary tables the folder does not store are
        computed.
    Returns:
        The model in eval mode (``module(ids) -> logits``), form "hf-folder", path the folder,
        ``folder_files`` the files its content hash covers (computed when first asked for:
        ``LoadedModel.content_sha256``), arch ``{"kind": "hf", "class", "config",
        "tokenizer"}``.
    Raises:
        ModelFileError: custom code, unknown class, no safetensors weights, bad index or shard
            names, weights that do not fit, NaN/inf or non-float weights, transformers missing.
    """
    folder = _open(Path(path).expanduser())
    what = f"architecture {type(folder.module).__name__}"
    if weights:
        state = _map_tensors(folder.weights)
        check_finite(folder.path, state)
        state = tied_state(folder.path, folder.groups, state)
    else:
        held = {k: t for f in folder.weights.files
                for k, t in folder.weights.headers[f].meta_tensors().items()}
        state = complete_ties(folder.groups, held)
    module = load_state_into_meta(folder.path, folder.module, state, folder.groups, what)
    input_shape, num_classes, input_dtype, id_range = input_spec(folder.path, module,
                                                                 folder.config)
    # no hash here: the folder's (LoadedModel.content_sha256) and the tokenizer's (recorded
    # when a model is saved) are computed when first needed, like a plain file's
    arch = hf_arch(type(module).__name__, folder.config, _tokenizer(folder.path), None)
    # a folder mal wrote (a merge) carries its provenance and spec in the weights' headers;
    # config.json alone says what the architecture is
    stored = decode_mal_metadata(folder.weights.files[0],
                                 folder.weights.headers[folder.weights.files[0]].metadata)
    metadata = {"name": folder.path.name, **(stored.provenance if stored else {})}
    return LoadedModel(module=module, arch=arch, input_shape=input_shape,
                       num_classes=num_classes, form=FORM, path=folder.path,
                       metadata=metadata, input_dtype=input_dtype, input_range=id_range,
                       folder_files=folder_files(folder.weights),
                       stored_spec=stored.spec if stored else None)
