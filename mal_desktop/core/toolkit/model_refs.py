"""Model references: what a user names to evaluate, resolved to a model and a stable content hash.

A reference is one of

- a model file path (``.safetensors``, ``.pt2``, ``.pt``/``.pth`` with ``arch``), or a Hugging
  Face model folder (or its ``config.json``);
- ``zoo:NAME``: a model of the demo zoo (the default zoo folder or a given one);
- a plan ``.json``: the "base + steps" assembly it describes, computed on the fly;
- a plan in memory (the GUI's current plan), made with :func:`plan_ref`: hashed like the same
  plan saved as ``.json``, so both share cached results;
- an in-memory model (the GUI's current merge), made with :func:`memory_ref`.

The content hash keys result caches, so it must change exactly when the model's weights can:
a file's sha256 (a model folder's: the hash of its files' hashes); for a plan, the hash of its steps plus the sha256 of every input file (so
moving files does not invalidate results, editing one does); for a memory model, the hash of its
tensors and architecture. Computing a hash never runs a model or an assembly.

The kinds live in a registry (:data:`MODEL_KINDS`): a new kind is a ``ModelRef`` subclass and one
:func:`register_model_kind` call with a function that recognises its reference text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Mapping

import torch

from ..errors import MalError, ModelFileError
from ..io.files import load_model
from ..io.hashing import cached_file_sha256
from ..io.hf_folder import folder_sha256, hf_folder_of
from ..io.model import LoadedModel
from ..jobs import assemble_job
from ..merge.plan import AssemblyPlan, load_plan
from ..progress import CancelToken, ProgressEvent, run_job
from ..zoo.build import INDEX_NAME, default_zoo_dir, load_zoo_index
from ..zoo.language import default_lm_zoo_dir

ZOO_PREFIX = "zoo:"


@dataclass
class ModelRef:
    """A reference to a model. Subclasses implement ``_hash`` and ``load_job``.

    text: what the user wrote. name: a short display name (file stem, zoo name, plan stem).
    """

    text: str
    name: str
    _hash: str | None = field(default=None, init=False, repr=False)

    kind = "abstract"

    def content_hash(self) -> str:
        """Stable hex hash of the model's content (computed once, never runs the model).

        Raises ModelFileError / MalError when the referenced files cannot be read.
        """
        if self._hash is None:
            self._hash = self._compute_hash()
        return self._hash

    def _compute_hash(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_job(self, cancel: CancelToken | None = None
                 ) -> Generator[ProgressEvent, None, LoadedModel]:
        """A job returning the runnable model (a plan is assembled here, with progress)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def load(self, cancel: CancelToken | None = None) -> LoadedModel:
        """:meth:`load_job` driven to its end without progress."""
        return run_job(self.load_job(cancel))


@dataclass
class FileRef(ModelRef):
    """A model file; ``arch`` is the ``module:factory`` opt-in for plain state dicts;
    ``output``: for a model returning several outputs, which one is the logits (None: the
    first, or the one a merged file recorded)."""

    path: Path = Path()
    arch: str | None = None
    output: int | None = None

    kind = "file"

    def _compute_hash(self) -> str:
        digest = _content_sha256(self.path)
        # The same state dict read through another architecture is another model; so is the
        # same model scored on another of its outputs.
        if self.arch is None and self.output is None:
            return digest
        extra = {k: v for k, v in (("arch", self.arch), ("output", self.output)) if v is not None}
        return _sha({"file": digest, **extra})

    def load_job(self, cancel: CancelToken | None = None
                 ) -> Generator[ProgressEvent, None, LoadedModel]:
        yield ProgressEvent("load", 0.0, f"loading {self.path.name}")
        return load_model(self.path, self.arch, self.output)


@dataclass
class ZooRef(FileRef):
    """``zoo:NAME``: a demo-zoo model, resolved through the zoo index when created."""

    kind = "zoo"


@dataclass
class PlanRef(ModelRef):
    """The base with a plan's steps applied, assembled when loaded.

    path: the plan ``.json`` file (read when hashed or assembled), unless ``plan`` holds the plan
    itself (see :func:`plan_ref`). models / specs: loaded models and permutation specs by plan
    path, which the assembly uses instead of reading those files again.
    """

    path: Path = Path()
    arch: str | None = None
    plan: AssemblyPlan | None = field(default=None, repr=False, compare=False)
    models: Mapping[str, LoadedModel] | None = field(default=None, repr=False, compare=False)
    specs: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    kind = "plan"

    def _plan(self) -> AssemblyPlan:
        if self.plan is not None:
            return self.plan
        return load_plan(self.path)

    def _compute_hash(self) -> str:
        plan = self._plan()
        where = self.path if self.plan is None else self.name  # names the plan in errors
        doc = plan.to_json()
        doc.pop("data", None)  # evaluation data does not change the assembled weights
        # Paths are replaced by content hashes: the same plan over the same files is the same
        # model wherever the files lie.
        doc["base"] = _content_sha256(_existing(plan.base, where))
        doc["zoo"] = {name: _content_sha256(_existing(p, where)) for name, p in plan.zoo.items()}
        if self.arch is not None:
            doc["arch"] = self.arch
        return _sha({"plan": doc})

    def load_job(self, cancel: CancelToken | None = None
                 ) -> Generator[ProgressEvent, None, LoadedModel]:
        result = yield from assemble_job(self._plan(), cancel, arch=self.arch,
                                         models=self.models, specs=self.specs)
        model = result.model
        model.metadata = {**model.metadata, "name": self.name}
        return model


@dataclass
class MemoryRef(ModelRef):
    """A model already in memory (e.g. the GUI's current assembly)."""

    model: LoadedModel | None = None

    kind = "memory"

    def _compute_hash(self) -> str:
        assert self.model is not None
        h = hashlib.sha256()
        h.update(json.dumps(self.model.arch, sort_keys=True, default=str).encode())
        for key, tensor in sorted(self.model.state().items()):
            h.update(key.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(str(tensor.dtype).encode())
            # raw bytes, whatever the dtype (numpy has no bfloat16)
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            h.update(raw.numpy().tobytes())
        return h.hexdigest()

    def load_job(self, cancel: CancelToken | None = None
                 ) -> Generator[ProgressEvent, None, LoadedModel]:
        assert self.model is not None
        yield ProgressEvent("load", 0.0, f"using {self.name} from memory")
        return self.model


def _sha(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _existing(path: str, plan: Path | str) -> Path:
    """``path`` (a model the plan names) when it is a file or a model folder; ``plan`` names
    the plan in errors."""
    p = Path(path)
    if not p.is_file() and hf_folder_of(p) is None:
        raise MalError(f"{plan}: the plan names {path}, which does not exist")
    return p


def _content_sha256(path: Path) -> str:
    """sha256 of a model file, or the content hash of a Hugging Face model folder.

    Raises ModelFileError when there is no such file or folder."""
    folder = hf_folder_of(path)
    if folder is not None:
        try:
            return folder_sha256(folder)
        except OSError as exc:
            raise ModelFileError(folder, f"cannot read: {exc.strerror or exc}") from None
    if not path.is_file():
        raise ModelFileError(path, "no such file")
    return cached_file_sha256(path)  # once per file version, not at every matrix run


# -- registry of reference kinds ---------------------------------------------------------
RefFactory = Callable[[str, "Path | None", "str | None"], "ModelRef | None"]
MODEL_KINDS: dict[str, RefFactory] = {}


# The built-in kind that takes any text as a file path (and raises when there is no such file).
FALLBACK_KIND = "file"


def register_model_kind(kind: str, factory: RefFactory) -> None:
    """Register ``factory(text, zoo_dir, arch) -> ModelRef | None`` (None: not this kind).

    Kinds are tried in registration order, the first that recognises the text wins; the
    built-in ``file`` kind is always tried last, since it claims every text (a missing file is
    its error), so a kind registered after it is still reached.
    """
    MODEL_KINDS[kind] = factory
    if kind != FALLBACK_KIND and FALLBACK_KIND in MODEL_KINDS:
        MODEL_KINDS[FALLBACK_KIND] = MODEL_KINDS.pop(FALLBACK_KIND)  # back to the end


def _zoo_factory(text: str, zoo_dir: Path | None, arch: str | None) -> ModelRef | None:
    if not text.startswith(ZOO_PREFIX):
        return None
    name = text[len(ZOO_PREFIX):]
    if not name:
        raise MalError(f"{text!r}: name a zoo model after 'zoo:', e.g. zoo:mlp-w64-s0")
    if zoo_dir is not None:
        return ZooRef(text, name, path=load_zoo_index(zoo_dir).path_of(name))
    # the image demo zoo, then the language zoo: each has its own folder (and variable);
    # zoo:llama-w64-s0-code was looked up in the image zoo only
    built = [load_zoo_index(d) for d in (default_zoo_dir(), default_lm_zoo_dir())
             if (d / INDEX_NAME).is_file()]
    for index in built:
        if name in index.names():
            return ZooRef(text, name, path=index.path_of(name))
    where = " or ".join(str(d) for d in (default_zoo_dir(), default_lm_zoo_dir()))
    raise MalError(f"{text}: no model named {name!r} in the demo zoo or the language zoo "
                   f"({where}); `mal zoo list` and `mal zoo list --language` list them")


def _plan_factory(text: str, zoo_dir: Path | None, arch: str | None) -> ModelRef | None:
    if not text.lower().endswith(".json") or hf_folder_of(text) is not None:
        return None  # a model folder's config.json is the model, not a plan
    path = Path(text).expanduser()
    if not path.is_file():
        raise MalError(f"{text}: no such plan file")
    return PlanRef(text, path.stem, path=path.resolve(), arch=arch)


def _file_factory(text: str, zoo_dir: Path | None, arch: str | None) -> ModelRef | None:
    path = Path(text).expanduser()
    folder = hf_folder_of(path)
    if folder is not None:  # a Hugging Face model folder, named as the folder or its config
        return FileRef(text, folder.name, path=folder.resolve(), arch=arch)
    if not path.is_file():
        raise ModelFileError(path, "no such file (a model reference is a model file, a model "
                                   "folder, zoo:NAME, a plan .json or a project .malproj)")
    return FileRef(text, path.stem, path=path.resolve(), arch=arch)


register_model_kind("zoo", _zoo_factory)
register_model_kind("plan", _plan_factory)
register_model_kind(FALLBACK_KIND, _file_factory)


def parse_model_ref(text: str, zoo_dir: Path | str | None = None,
                    arch: str | None = None) -> ModelRef:
    """Resolve a reference text to a :class:`ModelRef` (files are checked to exist, not read).

    zoo_dir: zoo folder for ``zoo:NAME`` (default: the user's demo-zoo folder).
    arch: ``module:factory`` for plain state dicts (an explicit opt-in to run that code).
    Raises MalError (ModelFileError for files) when nothing matches or the target is missing.
    """
    zoo = Path(zoo_dir) if zoo_dir is not None else None
    for factory in MODEL_KINDS.values():
        ref = factory(text, zoo, arch)
        if ref is not None:
            return ref
    raise MalError(f"{text!r} is not a model reference")  # pragma: no cover - file kind is last


def plan_ref(plan: AssemblyPlan, models: Mapping[str, LoadedModel] | None = None,
             specs: Mapping[str, Any] | None = None, name: str = "plan",
             text: str | None = None, arch: str | None = None) -> PlanRef:
    """A reference to an assembly plan held in memory (e.g. the GUI's current plan).

    Its content hash is the one ``mal eval-matrix --models plan.json`` computes for the same
    plan saved as ``plan.json`` (the steps plus the sha256 of every model file the plan names),
    so the two share cached cells; computing it reads those files but never assembles.

    plan: the plan; it must not change afterwards (pass a copy of a plan being edited).
    models / specs: loaded models and their permutation specs by plan path, used when the plan
    is assembled (a cell missing the cache) instead of reading the files again.
    name: the display name. text: the reference text, the matrix's row id (default
    ``plan:NAME``). arch: ``module:factory`` for plain state dicts, as for a plan file.
    Returns the PlanRef. Hashing raises MalError when a model the plan names is not a file.
    """
    return PlanRef(text if text is not None else f"plan:{name}", name, arch=arch, plan=plan,
                   models=models, specs=specs)


def memory_ref(name: str, model: LoadedModel) -> MemoryRef:
    """A reference to a model held in memory (hashed from its tensors)."""
    return MemoryRef(f"memory:{name}", name, model=model)
