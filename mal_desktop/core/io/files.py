"""Model files in, model files out: the three forms mal_desktop reads and the one it writes.

Read (``load_model``, ``read_header``):
- mal safetensors: weights + architecture (family + config, a .pt2 program, or a user factory)
  + provenance in the safetensors metadata;
- .pt2 programs from ``torch.export.save`` (runnable without the user's code; read by our own
  reader, never ``torch.export.load``: nothing in the file is executed, see pt2_io);
- plain state dicts (.safetensors without mal metadata, .pt/.pth read tensor-only) with a user
  architecture named as ``module:factory`` - an explicit opt-in, since it runs user code;
- Hugging Face model folders (config.json + safetensors weights, see hf_folder), given as the
  folder or its config.json: built by transformers from the config, never with code from the
  folder.
Write (``save_model``): mal safetensors, atomically, never over one of the model's input files.
Input files are only ever opened for reading.
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..arch.families import build_model
from ..errors import MalError, ModelFileError
from .atomic import atomic_write, atomic_write_bytes, atomic_write_text
from .hashing import cached_file_sha256, file_sha256
from .hf_config import build_module, config_of_arch, input_spec
from .hf_write import save_hf_folder
from .hf_folder import (FORM as HF_FORM, complete_ties, hf_folder_of, load_hf_folder,
                        load_state_into_meta, read_hf_header, tied_state)
from .meta import tie_groups
from .model import LoadedModel
from .pt2_io import (check_output_choice, program_from_bytes, program_input_shape, program_module,
                     program_num_classes, program_outputs, read_pt2, read_pt2_bytes)
from .pages import PageReleaser
from .safetensors_io import (ARCH_KINDS, MalMetadata, decode_mal_metadata, encode_mal_metadata,
                             read_safetensors_header, read_safetensors_tensors, write_safetensors)
from .sharded import (DEFAULT_SHARD_BYTES, INDEX, check_folder_output, is_sharded_folder,
                      read_sharded, write_sharded)
from .state_dict_io import (attach_state, check_finite, check_shapes, check_weight_dtypes,
                            factory_with_state, load_state_into, torch_load_weights, unwrap_state)

__all__ = ["ModelHeader", "load_model", "open_from_headers", "save_model", "read_header",
           "file_sha256", "load_sharded_model", "atomic_write", "atomic_write_text",
           "atomic_write_bytes", "model_form"]

_FORMS = {".safetensors": "safetensors", ".pt2": "pt2", ".pt": "pt", ".pth": "pt"}


@dataclass(frozen=True)
class ModelHeader:
    """What a model file declares, read without loading its tensors where the format allows.

    path: the file (absolute); for a Hugging Face model folder, the folder.
    form: "mal-safetensors" | "pt2" | "state-dict" | "hf-folder".
    shapes / dtypes: per state key, the tensor shape and torch dtype name ("float32").
    arch: the architecture dict (None for a plain state dict: it needs --arch).
    input_shape / num_classes: None when the file does not say (plain state dicts).
    metadata: provenance (mal safetensors) or the file's own string metadata.
    """

    path: Path
    form: str
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    arch: dict[str, Any] | None
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_parameters(self) -> int:
        """Number of elements over all tensors (parameters and buffers)."""
        return sum(math.prod(shape) for shape in self.shapes.values())

    @property
    def nbytes(self) -> int:
        """Bytes the tensors take in memory (for memory estimates)."""
        return sum(math.prod(shape) * getattr(torch, self.dtypes[key]).itemsize
                   for key, shape in self.shapes.items())


def _check_input(path: str | Path) -> tuple[Path, str]:
    """Resolve ``path`` and refuse what is not a readable, non-empty file of a known extension."""
    p = Path(path).expanduser().absolute()
    try:
        p = p.resolve(strict=True)
    except FileNotFoundError:
        raise ModelFileError(p, "no such file") from None
    except PermissionError:
        raise ModelFileError(p, "permission denied: a folder on the way cannot be opened") from None
    except (OSError, RuntimeError) as exc:  # Python < 3.13 reports a link loop as RuntimeError
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise ModelFileError(p, "symbolic link loop") from None
        raise ModelFileError(p, f"cannot open: {exc.strerror or exc}") from None
    if p.is_dir():
        raise ModelFileError(p, "is a directory, not a model file (nor a Hugging Face model "
                                "folder: it has no config.json)")
    if not p.is_file():
        raise ModelFileError(p, "is not a regular file")
    kind = _FORMS.get(p.suffix.lower())
    if kind is None:
        raise ModelFileError(p, "not a model file: expected .safetensors, .pt2, .pt or .pth")
    if p.stat().st_size == 0:
        raise ModelFileError(p, "file is empty")
    if not os.access(p, os.R_OK):
        raise ModelFileError(p, "permission denied: the file is not readable")
    return p, kind


def model_form(path: str | Path) -> str:
    """The form of a model file judged from its extension and (for .safetensors) its header:
    "mal-safetensors", "pt2" or "state-dict".

    Raises:
        ModelFileError: missing, empty, unknown extension or corrupt header.
    """
    if hf_folder_of(path) is not None:
        return HF_FORM
    if _sharded_mal_folder(path):
        return "mal-safetensors"
    p, kind = _check_input(path)
    if kind == "safetensors":
        header = read_safetensors_header(p)
        return "mal-safetensors" if decode_mal_metadata(p, header.metadata) else "state-dict"
    return "pt2" if kind == "pt2" else "state-dict"


def _sharded_mal_folder(path: str | Path) -> bool:
    """A folder of shards that ``save_model`` wrote (an index, no config.json)."""
    p = Path(path).expanduser()
    return p.is_dir() and is_sharded_folder(p)


def _need_arch(path: Path, what: str) -> ModelFileError:
    return ModelFileError(path, f"{what}: pass --arch module:factory (the Python function that "
                                "builds the architecture) to load it; this runs that code")


def _resolve_program(path: Path, arch: dict[str, Any]) -> Path:
    """The .pt2 program a mal safetensors file points to. When the recorded absolute path is gone,
    a file of the same name next to the weights is accepted (the two were moved together); its
    hash is checked by the caller either way."""
    recorded = arch.get("program")
    if not isinstance(recorded, str) or not isinstance(arch.get("sha256"), str):
        raise ModelFileError(path, "corrupt mal_desktop metadata: a pt2 architecture needs "
                                   "'program' and 'sha256'")
    program = Path(recorded)
    if program.suffix.lower() != ".pt2":
        raise ModelFileError(path, f"corrupt mal_desktop metadata: the architecture program "
                                   f"{recorded[:200]!r} is not a .pt2 file")
    if program.is_file():
        return program
    sibling = path.parent / program.name
    if sibling.is_file():
        return sibling
    raise ModelFileError(path, f"architecture program {program} is missing")


def _load_mal(path: Path, meta: MalMetadata, state: dict[str, torch.Tensor],
              arch_arg: str | None, output: int | None = None, weights: bool = True
              ) -> LoadedModel:
    """The model of a mal file or folder from its metadata and ``state``. weights: False when
    ``state`` is the header's meta tensors (``open_from_headers``): the module stays on the
    meta device; only family and Hugging Face architectures are built that way."""
    arch = meta.arch
    program = None
    outputs, output_index = 1, 0
    kind = arch["kind"]
    if kind == "family":
        family, config = arch.get("family"), arch.get("config") or {}
        if not isinstance(family, str) or not isinstance(config, dict):
            raise ModelFileError(path, "corrupt mal_desktop metadata: a family architecture needs "
                                       "'family' and 'config'")
        try:
            # On the meta device (no memory, no random init): a small file whose stored config
            # claims huge layers is refused by the shape check instead of allocating them, and
            # the file's tensors become the module's own below.
            with torch.device("meta"):
                module = build_model(family, config)
            check_shapes(path, module.state_dict(), state, f"family {family!r}")
            attached = attach_state(path, module, state, f"family {family!r}")
            if not attached and weights:  # buffers no state carries: build for real
                module = build_model(family, config)
        except ModelFileError:
            raise
        except MalError as exc:
            raise ModelFileError(path, str(exc)) from None
        except Exception as exc:  # a config the family cannot build
            raise ModelFileError(path, f"cannot build family {family!r} from the stored config: "
                                       f"{type(exc).__name__}: {exc}") from None
        if not attached and weights:
            load_state_into(path, module, state, f"family {family!r}")
    elif kind == "pt2":
        program_path = _resolve_program(path, arch)
        # the hash is compared before the program is read: only the exact bytes the weights were
        # saved against are ever parsed
        data, sha = read_pt2_bytes(program_path)
        if sha != arch["sha256"]:
            raise ModelFileError(path, f"architecture program {program_path} changed since this "
                                       f"file was saved (sha256 {sha[:12]}..., expected "
                                       f"{arch['sha256'][:12]}...)")
        try:
            program = program_from_bytes(program_path, data)
        except ModelFileError as exc:
            raise ModelFileError(path, f"architecture program {program_path}: "
                                       f"{exc.problem}") from None
        module = program_module(program)
        # The module's parameters are the program's own tensors, so loading here updates the
        # program too: program.module() and module run the same weights.
        load_state_into(path, module, state, f"program {program_path.name}")
        arch = {"kind": "pt2", "program": str(program_path), "sha256": sha}
        outputs = program_outputs(program)
        output_index = check_output_choice(path, program, _stored_output(meta, output))
    elif kind == "hf":
        # A merged Hugging Face model: the stored config is as untrusted as a config.json.
        config = config_of_arch(path, arch)
        module = build_module(path, config, device="meta")
        groups = tie_groups(module)
        state = tied_state(path, groups, state) if weights else complete_ties(groups, state)
        load_state_into_meta(path, module, state, groups, f"architecture {arch['class']}")
        _, _, input_dtype, id_range = input_spec(path, module, config)
        return LoadedModel(module=module, arch=dict(arch), input_shape=meta.input_shape,
                           num_classes=meta.num_classes, form="mal-safetensors", path=path,
                           metadata=dict(meta.provenance), stored_spec=meta.spec,
                           input_dtype=input_dtype, input_range=id_range)
    else:  # factory
        stored = arch.get("factory")
        if arch_arg is None:
            raise _need_arch(path, f"the architecture is user code {stored!r}")
        built = factory_with_state(path, arch_arg, state, _stored_output(meta, output))
        module = built.module
        arch = {"kind": "factory", "factory": arch_arg}
        outputs, output_index = built.outputs, built.output_index
    if kind == "family":
        _single_output(path, output)
    num_classes = meta.num_classes
    if kind == "pt2" and outputs > 1:  # the stored size is the logits' the file was saved with
        num_classes = program_num_classes(path, program, output_index)
    return LoadedModel(module=module.eval(), arch=arch, input_shape=meta.input_shape,
                       num_classes=num_classes, form="mal-safetensors", path=path,
                       metadata=dict(meta.provenance), program=program,
                       output_index=output_index, outputs=outputs, stored_spec=meta.spec)


def _stored_output(meta: MalMetadata, output: int | None) -> int | None:
    """The output asked for, else the one the file was saved with (a merge records its base's
    ``output_index``), else None (the first)."""
    if output is not None:
        return output
    stored = meta.provenance.get("output_index")
    return stored if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0 \
        else None


def _single_output(path: Path, output: int | None) -> None:
    """Family architectures return one tensor: only output 0 exists."""
    if output not in (None, 0):
        raise ModelFileError(path, f"the model returns one output; there is no output {output}")


def _load_plain(path: Path, state: dict[str, torch.Tensor], arch_arg: str | None,
                file_metadata: dict[str, str], output: int | None = None) -> LoadedModel:
    if arch_arg is None:
        raise _need_arch(path, "plain state dict with no architecture")
    built = factory_with_state(path, arch_arg, state, output)
    metadata: dict[str, Any] = {"file_metadata": dict(file_metadata)} if file_metadata else {}
    return LoadedModel(module=built.module.eval(), arch={"kind": "factory", "factory": arch_arg},
                       input_shape=built.input_shape, num_classes=built.num_classes,
                       form="state-dict", path=path, metadata=metadata,
                       output_index=built.output_index, outputs=built.outputs)


def load_model(path: str | Path, arch: str | None = None, output: int | None = None
               ) -> LoadedModel:
    """Load a model file of any supported form.

    Parameters:
        path: a .safetensors (mal or plain state dict), .pt2, .pt or .pth file, a folder of
            shards ``save_model`` wrote, or a Hugging Face model folder (or its config.json).
        arch: "package.module:function" building the architecture - required for plain state
            dicts and for mal files whose architecture is user code; importing and calling it runs
            that code (the explicit opt-in). Files that carry their own architecture (family or
            .pt2 program) ignore it.
        output: which output is the logits when the architecture returns several (None: the
            first; see ``LoadedModel.outputs`` for how many there are).
    Returns:
        The model, in eval mode, with its architecture, shapes, form, path, sha256 of the file,
        provenance, and the ExportedProgram for .pt2 programs.
    Raises:
        ModelFileError: for any file that cannot be loaded (missing, directory, empty, unknown
            extension, corrupt or truncated, unsafe pickle, NaN/inf weights, architecture that
            cannot be imported or does not fit the weights, missing or changed .pt2 program;
            for folders see ``hf_folder.load_hf_folder``).
    """
    if hf_folder_of(path) is not None:
        return load_hf_folder(path)
    if _sharded_mal_folder(path):
        return load_sharded_model(path, arch)
    p, kind = _check_input(path)
    if kind == "safetensors":
        header = read_safetensors_header(p)
        meta = decode_mal_metadata(p, header.metadata)
        state = read_safetensors_tensors(p)
        check_finite(p, state)
        if meta is not None:
            return _load_mal(p, meta, state, arch, output)
        return _load_plain(p, state, arch, header.metadata, output)
    if kind == "pt2":
        program, sha = read_pt2(p)
        tensors = {**program.state_dict,
                   **{k: v for k, v in program.constants.items() if isinstance(v, torch.Tensor)}}
        check_finite(p, tensors)
        # parameters must be mergeable floats; integer buffers and constants (BatchNorm's
        # num_batches_tracked, index tensors) may stay integers
        parameters = set(program.graph_signature.parameters)
        check_weight_dtypes(p, tensors, reference={k: v for k, v in tensors.items()
                                                   if k not in parameters})
        index = check_output_choice(p, program, output)
        return LoadedModel(module=program_module(program),
                           arch={"kind": "pt2", "program": str(p), "sha256": sha},
                           input_shape=program_input_shape(p, program),
                           num_classes=program_num_classes(p, program, index), form="pt2", path=p,
                           sha256=sha, metadata={}, program=program, output_index=index,
                           outputs=program_outputs(program))
    # Tensor-only loading is safe, so it runs before the --arch check: a corrupt or unsafe file
    # is reported as such rather than as a missing architecture.
    state = unwrap_state(p, torch_load_weights(p, mmap=True))
    check_finite(p, state)
    return _load_plain(p, state, arch, {}, output)


def open_from_headers(path: str | Path, output: int | None = None) -> LoadedModel | None:
    """The model of ``path`` built from its headers alone, no tensor data read: its module
    lives on the meta device (shapes and dtypes as stored, no values), enough for the layer
    tree, discovery of its permutation spaces and pre-flight checks while the weights load.

    Hugging Face folders and mal files or folders whose architecture is a family or a
    Hugging Face class are built this way (seconds for a 7B-class folder). Returns None for
    the forms whose architecture comes with the tensors or from user code (.pt2 programs, plain
    state dicts, user factories): only ``load_model`` opens those.
    Raises:
        ModelFileError: what ``read_header`` refuses, and weights that do not fit the
            architecture (``load_model`` would refuse them too).
    """
    if hf_folder_of(path) is not None:
        return load_hf_folder(path, weights=False)
    if _sharded_mal_folder(path):
        p, meta, mapped = _read_mal_shards(path)  # memory-mapped: no tensor data is read
        state = {k: torch.empty_like(v, device="meta") for k, v in mapped.items()}
    else:
        p, kind = _check_input(path)
        if kind != "safetensors":
            return None
        header = read_safetensors_header(p)
        meta = decode_mal_metadata(p, header.metadata)
        if meta is None:
            return None
        state = header.meta_tensors()
    if meta.arch.get("kind") not in ("family", "hf"):
        return None
    return _load_mal(p, meta, state, None, output, weights=False)


def read_header(path: str | Path) -> ModelHeader:
    """Describe a model file (tensor shapes and dtypes, architecture, input and output sizes)
    for pre-flight checks and memory estimates.

    .safetensors: only the header is read, never the tensor data (so NaN weights are not seen
    here; ``load_model`` checks them). .pt/.pth: read tensor-only with memory mapping where the
    file format allows it. .pt2: the program is checked and loaded (its graph holds the shapes).
    Hugging Face folders: the config and every shard's header, with the architecture built on
    the meta device to check them against each other; no tensor data is read.

    Raises:
        ModelFileError: as ``load_model`` for missing, empty, corrupt, unsafe or unknown files.
    """
    if hf_folder_of(path) is not None:
        return ModelHeader(**read_hf_header(Path(path)))
    if _sharded_mal_folder(path):
        folder, meta, state = _read_mal_shards(path)  # memory-mapped: no tensor data is read
        return ModelHeader(folder, "mal-safetensors", {k: tuple(v.shape) for k, v in state.items()},
                           {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
                           dict(meta.arch), meta.input_shape, meta.num_classes,
                           dict(meta.provenance))
    p, kind = _check_input(path)
    if kind == "safetensors":
        header = read_safetensors_header(p)
        shapes = {k: e.shape for k, e in header.tensors.items()}
        dtypes = {k: e.dtype for k, e in header.tensors.items()}
        meta = decode_mal_metadata(p, header.metadata)
        if meta is None:
            return ModelHeader(p, "state-dict", shapes, dtypes, None, None, None,
                               dict(header.metadata))
        return ModelHeader(p, "mal-safetensors", shapes, dtypes, dict(meta.arch),
                           meta.input_shape, meta.num_classes, dict(meta.provenance))
    if kind == "pt2":
        program, sha = read_pt2(p)
        state = program.state_dict
        return ModelHeader(p, "pt2", {k: tuple(v.shape) for k, v in state.items()},
                           {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
                           {"kind": "pt2", "program": str(p), "sha256": sha},
                           program_input_shape(p, program), program_num_classes(p, program), {})
    state = unwrap_state(p, torch_load_weights(p, mmap=True))
    return ModelHeader(p, "state-dict", {k: tuple(v.shape) for k, v in state.items()},
                       {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
                       None, None, None, {})


def check_model_output(path: str | Path) -> Path:
    """Check that a model can be saved at ``path`` before any work is done for it.

    Returns the path (user folder expanded). Raises ModelFileError naming the path when it does
    not end in ``.safetensors``, is a directory, its folder is missing or is not a folder, or the
    folder (or an existing file there) is not writable. Nothing is created.
    """
    target = Path(path).expanduser()
    if not target.suffix or is_sharded_folder(target):  # a folder of shards (large models)
        check_folder_output(target)
        return target
    if target.suffix.lower() != ".safetensors":
        raise ModelFileError(target, "mal_desktop saves models as .safetensors files "
                                     "(or, for a name without extension, a folder of shards)")
    if target.is_dir():
        raise ModelFileError(target, "is a directory")
    folder = target.parent
    if not folder.exists():
        raise ModelFileError(target, f"the folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelFileError(target, f"{folder} is not a folder")
    # the atomic write creates a temporary file beside the target, then renames it
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelFileError(target, f"the folder {folder} is not writable")
    return target


def save_model(model: LoadedModel, path: str | Path, metadata: dict | None = None,
               max_shard_bytes: int = DEFAULT_SHARD_BYTES, spec: dict | None = None) -> Path:
    """Save a model as a mal safetensors file, or a folder of shards, atomically.

    Tensors: every key of ``model.state()``, streamed to the file one tensor at a time from the
    model's own memory (no copy of the model is made; memory-mapped tensors have their pages
    handed back once written). Metadata: the architecture, input shape, number of classes and
    provenance ``{**model.metadata, **metadata}``.

    Parameters:
        model: the model to save.
        path: the target .safetensors file, or a name without extension for a sharded folder
            (``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, see
            sharded.py) - for a Hugging Face architecture a model folder transformers loads
            (config.json, tokenizer.json, the weights; mal's metadata in their headers); its
            parent folder must exist. An existing file or model folder is
            replaced atomically - unless the model was loaded from it, which is refused.
        metadata: provenance entries added to (and overriding) the model's own.
        max_shard_bytes: the largest shard of a sharded folder.
        spec: the model's permutation spec record (``graph.file_spec.spec_record``), stored so
            that opening the file elsewhere needs no export to find its spaces.
    Returns:
        ``path`` as a ``Path``.
    Raises:
        ModelFileError: wrong extension, the model's own input file, an unknown architecture
            kind, provenance that is not JSON, NaN/inf weights, or a write failure (the target is
            then untouched and no temporary file is left).
    """
    target = check_model_output(path)
    sources = [model.path]
    if isinstance(model.arch, dict) and model.arch.get("kind") == "pt2":
        sources.append(model.arch.get("program"))
    for source in sources:
        if source is not None and (target.resolve() == Path(source).resolve()
                                   or target.resolve() in Path(source).resolve().parents):
            raise ModelFileError(target, "refusing to overwrite the model's own input file; "
                                         "save under another name")
    if not isinstance(model.arch, dict) or model.arch.get("kind") not in ARCH_KINDS:
        raise ModelFileError(target, f"cannot save: unknown architecture {model.arch!r}")
    provenance = {**model.metadata, **(metadata or {})}
    try:
        encoded = encode_mal_metadata(_recorded_arch(target, model.arch), model.input_shape,
                                      model.num_classes, provenance, spec)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(target, f"cannot save: metadata is not JSON-serialisable "
                                     f"({exc})") from None
    tensors = model.state()
    if any(t.is_meta for t in tensors.values()):
        raise ModelFileError(target, "cannot save: the model was opened without its weights")
    check_finite(target, tensors)
    pages = PageReleaser()
    try:
        if target.suffix.lower() == ".safetensors":
            atomic_write(target, lambda tmp: write_safetensors(tmp, tensors, encoded,
                                                               pages.release))
        elif model.arch["kind"] == "hf":  # a folder transformers loads, carrying mal's metadata
            save_hf_folder(model, target, max_shard_bytes, encoded, pages.release)
        else:
            write_sharded(target, tensors, encoded, max_shard_bytes, pages.release)
    except OSError as exc:
        raise ModelFileError(target, f"cannot write: {exc.strerror or exc}") from None
    return target


def _recorded_arch(target: Path, arch: dict[str, Any]) -> dict[str, Any]:
    """The architecture as it is saved: a Hugging Face model's tokenizer hash, which opening
    the folder leaves out (hashing waits until it is needed), is filled in.

    Raises:
        ModelFileError: the tokenizer cannot be read.
    """
    tokenizer = arch.get("tokenizer")
    if arch.get("kind") != "hf" or not isinstance(tokenizer, str) \
            or arch.get("tokenizer_sha256") is not None or not Path(tokenizer).is_file():
        return arch
    try:
        return {**arch, "tokenizer_sha256": cached_file_sha256(tokenizer)}
    except OSError as exc:
        raise ModelFileError(target, f"cannot read the tokenizer {tokenizer}: "
                                     f"{exc.strerror or exc}") from None


def load_sharded_model(folder: str | Path, arch: str | None = None) -> LoadedModel:
    """Load a sharded folder mal wrote (``save_model`` to a name without extension).

    The index's metadata must be mal's; the shards' tensors are memory-mapped and attached to
    the architecture as ``load_model`` does for a single file.

    Raises:
        ModelFileError: not a mal sharded folder, or as ``load_model``.
    """
    p, meta, state = _read_mal_shards(folder)
    check_finite(p, state)
    return _load_mal(p, meta, state, arch)


def _read_mal_shards(folder: str | Path) -> tuple[Path, MalMetadata, dict[str, torch.Tensor]]:
    """(resolved folder, mal metadata from the index, memory-mapped tensors) of a sharded folder
    mal wrote.

    Raises:
        ModelFileError: no index, an index without mal's metadata, or as ``read_sharded``.
    """
    p = Path(folder).expanduser().absolute()
    if not is_sharded_folder(p):
        raise ModelFileError(p, f"not a sharded model folder (no {INDEX})")
    p = p.resolve()
    metadata, state = read_sharded(p)
    meta = decode_mal_metadata(p / INDEX, metadata)
    if meta is None:
        raise ModelFileError(p, "the index carries no mal_desktop metadata: open the folder as "
                                "a Hugging Face model instead")
    return p, meta, state
