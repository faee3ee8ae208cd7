"""The demo zoo: which models it holds, building (training and saving) them, and its index.

A zoo is a folder of mal safetensors files plus ``zoo.json``, an index listing each model's name,
file (relative to the folder), family, config, dataset, seed and test accuracy. Building is a
generator job; an entry whose file already holds the same entry hash is not trained again, and
the index is rewritten after every model so an interrupted build keeps what it finished.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ..user_dirs import user_cache_dir
from ..errors import MalError
from ..evaluate.datasets import load_dataset
from ..graph.discover import discover_spec
from ..graph.file_spec import spec_record
from ..io.files import atomic_write_text, load_model, save_model
from ..io.model import LoadedModel
from ..progress import CancelToken, ProgressEvent, never_cancelled
from ..arch.families import build_model, full_config
from .pinned import numerics
from .train import TrainResult
from .worker import TrainTask, train_in_workers

INDEX_NAME = "zoo.json"
INDEX_VERSION = 1
# Part of every entry hash: bump it when the training recipe changes so old files are rebuilt.
# 2: trained in a pinned worker (deterministic, portable kernels), no time stamps in the file.
RECIPE_VERSION = 2


@dataclass(frozen=True)
class ZooEntry:
    """One model to build.

    name: unique file stem, e.g. "mlp-w64-s0" or "mlp-w64-s1-permuted".
    family / config: architecture (see families.py); ``input_shape`` and ``num_classes`` are
        taken from the dataset when the config leaves them out.
    dataset: registered dataset name it is trained on. seed: init and shuffling seed.
    epochs / lr / batch_size: the training recipe.
    """

    name: str
    family: str
    config: dict[str, Any] = field(hash=False)
    dataset: str = "digits"
    seed: int = 0
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 64

    def entry_hash(self) -> str:
        """Hash of the entry's JSON (and the recipe version): equal hashes mean the same model."""
        text = json.dumps({"entry": asdict(self), "recipe": RECIPE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ZooModelInfo:
    """One model listed in a zoo index; ``path`` is relative to the zoo folder."""

    name: str
    path: str
    family: str
    config: dict[str, Any] = field(hash=False)
    dataset: str
    seed: int
    epochs: int
    test_accuracy: float
    test_loss: float
    entry_hash: str


@dataclass(frozen=True)
class ZooIndex:
    """The models of a zoo folder, as listed in its ``zoo.json``."""

    entries: tuple[ZooModelInfo, ...]
    dir: Path

    def names(self) -> list[str]:
        """Model names in index order."""
        return [e.name for e in self.entries]

    def info(self, name: str) -> ZooModelInfo:
        """The entry called ``name``. Raises MalError when the zoo has none."""
        for e in self.entries:
            if e.name == name:
                return e
        raise MalError(f"{self.dir / INDEX_NAME}: no model named {name!r} in the zoo")

    def path_of(self, name: str) -> Path:
        """Absolute path of the model file called ``name``. Raises MalError when unknown."""
        return self.dir / self.info(name).path


# The default zoo. Widths per family: (width label, config); the middle one is trained with two
# seeds so that same-family different-seed pairs exist, and the mlp and cnn middle widths are also
# trained on "different data" variants of digits.
_WIDTHS: dict[str, list[tuple[int, dict[str, Any]]]] = {
    "mlp": [(w, {"widths": [w, w]}) for w in (32, 64, 128)],
    "cnn": [(c, {"channels": [c, 2 * c], "hidden": 4 * c}) for c in (8, 16, 32)],
    "vgg": [(c, {"stages": [[c, c], [2 * c, 2 * c]]}) for c in (8, 16, 32)],
    "resnet": [(w, {"width": w, "blocks": 2}) for w in (8, 16, 32)],
    "mixer": [(d, {"dim": d, "token_hidden": d, "channel_hidden": 2 * d}) for d in (16, 32, 64)],
}
# Training recipe per family (epochs, lr), tuned on 2 CPU cores: every model above 95% on digits.
_RECIPES: dict[str, tuple[int, float]] = {
    "mlp": (60, 1e-2),
    "cnn": (20, 3e-3),
    "vgg": (20, 1e-2),
    "resnet": (20, 1e-2),
    "mixer": (25, 3e-3),
}
_VARIANTS = ("digits-permuted", "digits-rot90", "digits-inverted")


def _entry(family: str, width: int, config: dict[str, Any], seed: int, dataset: str = "digits",
           epochs: int | None = None) -> ZooEntry:
    default_epochs, lr = _RECIPES[family]
    suffix = "" if dataset == "digits" else "-" + dataset.removeprefix("digits-")
    return ZooEntry(f"{family}-w{width}-s{seed}{suffix}", family, dict(config), dataset, seed,
                    default_epochs if epochs is None else epochs, lr)


def default_zoo(small: bool = False) -> list[ZooEntry]:
    """The demo zoo's entries.

    Full: 5 families x 3 widths on digits, a second seed at each middle width, and the mlp and cnn
    middle widths trained (with seed 1) on digits-permuted, digits-rot90 and digits-inverted, so
    that "-s1-<variant>" differs from "-s1" in its data only. ``small``: a handful of tiny
    models trained a few epochs, for tests.
    """
    if small:
        mlp32 = {"widths": [32, 32]}
        return [
            _entry("mlp", 32, mlp32, 0, epochs=8),
            _entry("mlp", 32, mlp32, 1, epochs=8),
            _entry("mlp", 64, {"widths": [64, 64]}, 0, epochs=8),
            _entry("cnn", 8, _WIDTHS["cnn"][0][1], 0, epochs=4),
            _entry("resnet", 8, {"width": 8, "blocks": 1}, 0, epochs=4),
        ]
    entries: list[ZooEntry] = []
    for family, widths in _WIDTHS.items():
        for i, (width, config) in enumerate(widths):
            seeds = (0, 1) if i == len(widths) // 2 else (0,)
            entries += [_entry(family, width, config, s) for s in seeds]
    for family in ("mlp", "cnn"):
        width, config = _WIDTHS[family][len(_WIDTHS[family]) // 2]
        entries += [_entry(family, width, config, 1, dataset) for dataset in _VARIANTS]
    return entries


def default_zoo_dir() -> Path:
    """Where the demo zoo lives: $MAL_ZOO_DIR, else $XDG_CACHE_HOME (or ~/.cache)/mal_desktop/zoo."""
    return user_cache_dir("zoo", "MAL_ZOO_DIR")


def _cached_info(entry: ZooEntry, path: Path, rel: str) -> ZooModelInfo | None:
    """Index line for an existing model file that holds ``entry``'s hash, else None."""
    if not path.is_file():
        return None
    try:
        meta = load_model(path).metadata
    except MalError:
        return None  # a corrupt or foreign file is rebuilt (and overwritten atomically)
    if meta.get("entry_hash") != entry.entry_hash():
        return None
    config = meta.get("config")
    config = dict(config if isinstance(config, dict) else entry.config)
    return ZooModelInfo(entry.name, rel, entry.family, config, entry.dataset, entry.seed, entry.epochs,
                        float(meta.get("test_accuracy", math.nan)), float(meta.get("test_loss", math.nan)),
                        entry.entry_hash())


def _index_json(infos: Sequence[ZooModelInfo]) -> str:
    doc = {"version": INDEX_VERSION, "entries": [asdict(i) for i in infos]}
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n"


def build_zoo_job(out_dir: Path, entries: Sequence[ZooEntry] | None = None,
                  cancel: CancelToken | None = None, workers: int = 1
                  ) -> Generator[ProgressEvent, None, ZooIndex]:
    """Train and save the zoo ``entries`` (default: :func:`default_zoo`) into ``out_dir``.

    Each model is built with ``torch.manual_seed(seed)`` and trained on its dataset in a pinned
    worker process (``worker.py``, ``pinned.py``: one thread, deterministic algorithms, portable
    kernels), so the same entry gives a bit-identical file on every x86-64 CPU with the same
    torch, whatever else runs in this process. ``workers`` such processes train in parallel.
    Each is saved as ``<name>.safetensors`` with provenance metadata (name, family, config,
    dataset, seed, epochs, recipe, test accuracy and loss, entry_hash, the numerics it was
    trained under; no time stamps, so the file's sha256 identifies the model). A file that
    already holds the entry's hash is reused. ``zoo.json`` is rewritten atomically after each
    model and at the end; it lists exactly these entries (those finished so far, in entry
    order), whatever an earlier index in the folder listed.
    Yields ProgressEvents (stage "zoo", fraction over all entries' epochs); checks ``cancel``
    at least every 0.1 s (a model in training when cancelled is dropped).
    Returns the ZooIndex of the built entries.
    Raises MalError for duplicate names or an unknown family, DatasetError for an unknown
    dataset (all before any training), Cancelled when cancelled.
    """
    entries = list(default_zoo() if entries is None else entries)
    indices = yield from build_zoos_job([(Path(out_dir), entries)], cancel, workers)
    return indices[0]


def build_zoos_job(folders: Sequence[tuple[Path, Sequence[ZooEntry]]],
                   cancel: CancelToken | None = None, workers: int = 1
                   ) -> Generator[ProgressEvent, None, list[ZooIndex]]:
    """:func:`build_zoo_job` for several zoo folders at once, with one set of ``workers``
    training processes for all of them (a study builds the demo zoo and its extras). Returns
    the folders' ZooIndex in order; progress spans all their entries."""
    cancel = cancel if cancel is not None else never_cancelled()
    groups = [(Path(d), list(es)) for d, es in folders]
    for _, entries in groups:
        _check_entries(entries)
    every = [e for _, es in groups for e in es]
    total_epochs = max(1, sum(max(1, e.epochs) for e in every))
    done_epochs = 0
    infos: list[dict[int, ZooModelInfo]] = [{} for _ in groups]
    where: dict[tuple[int, str], str] = {}
    tasks: list[TrainTask] = []
    for g, (out_dir, entries) in enumerate(groups):
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, entry in enumerate(entries):
            where[(g, entry.name)] = f"{entry.name} ({k + 1}/{len(entries)})"
            tasks.append(TrainTask(entry, _full_config(entry), (g, k)))  # DatasetError early
    todo = []
    for task in tasks:
        cancel.raise_if_cancelled()
        (g, k), entry = task.slot, task.entry
        rel = f"{entry.name}.safetensors"
        cached = _cached_info(entry, groups[g][0] / rel, rel)
        if cached is None:
            todo.append(task)
            continue
        infos[g][k] = cached
        done_epochs += max(1, entry.epochs)
        yield ProgressEvent("zoo", done_epochs / total_epochs, f"cached {where[(g, entry.name)]}",
                            {"name": entry.name, "cached": True})
    progress = {t.slot: 0.0 for t in todo}
    for msg in train_in_workers(todo, workers, cancel):
        kind, task = msg[0], msg[1]
        (g, k), e = task.slot, task.entry
        if kind == "epoch":
            epoch = int(msg[2]["epoch"])
            progress[task.slot] = float(epoch)
            fraction = (done_epochs + sum(progress.values())) / total_epochs
            yield ProgressEvent("zoo", min(1.0, fraction),
                                f"training {where[(g, e.name)]} epoch {epoch}/{e.epochs}",
                                {"name": e.name, **msg[2]})
            continue
        cancel.raise_if_cancelled()
        rel = f"{e.name}.safetensors"
        out_dir = groups[g][0]
        info = _save_trained(e, _module_with(e, task.config, msg[2]), task.config, msg[3],
                             out_dir / rel, rel)
        infos[g][k] = info
        atomic_write_text(out_dir / INDEX_NAME,
                          _index_json([infos[g][i] for i in sorted(infos[g])]))
        progress[task.slot] = 0.0
        done_epochs += max(1, e.epochs)
        yield ProgressEvent("zoo", min(1.0, (done_epochs + sum(progress.values())) / total_epochs),
                            f"trained {where[(g, e.name)]}: test accuracy {info.test_accuracy:.1%}",
                            {"name": e.name, "test_accuracy": info.test_accuracy})
    out = []
    for g, (out_dir, _) in enumerate(groups):
        ordered = [infos[g][i] for i in sorted(infos[g])]
        atomic_write_text(out_dir / INDEX_NAME, _index_json(ordered))
        out.append(ZooIndex(tuple(ordered), out_dir))
    return out


def _check_entries(entries: Sequence[ZooEntry]) -> None:
    """Refuse duplicate names and unknown families before any work (readable MalError)."""
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise MalError(f"zoo entries have duplicate names: {', '.join(dup)}")
    for e in entries:
        full_config(e.family, e.config)  # unknown family -> readable MalError


def _full_config(entry: ZooEntry) -> dict[str, Any]:
    """The entry's complete architecture config; ``input_shape`` and ``num_classes`` from its
    dataset. Raises DatasetError for an unknown dataset."""
    data = load_dataset(entry.dataset)
    config = dict(entry.config)
    config.setdefault("input_shape", list(data.input_shape))
    config.setdefault("num_classes", int(data.num_classes))
    return full_config(entry.family, config)


def _module_with(entry: ZooEntry, config: dict[str, Any], state: dict[str, Any]
                 ) -> torch.nn.Module:
    """The entry's architecture holding the trained ``state`` (numpy arrays from a worker).

    Built under a forked RNG: the caller's random state is not consumed."""
    with torch.random.fork_rng(devices=[]):
        module = build_model(entry.family, config)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return module.eval()


def _save_trained(entry: ZooEntry, module: torch.nn.Module, config: dict[str, Any],
                  result: TrainResult, path: Path, rel: str) -> ZooModelInfo:
    """Save a trained entry with its provenance metadata; return its index line.

    The metadata holds nothing that changes from one build to the next (no time stamps), so
    equal training gives equal files."""
    metadata = {
        "name": entry.name, "family": entry.family, "config": config, "dataset": entry.dataset,
        "seed": entry.seed, "epochs": entry.epochs, "lr": entry.lr, "batch_size": entry.batch_size,
        "recipe": RECIPE_VERSION, "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss, "entry_hash": entry.entry_hash(),
        "trained_under": _trained_under(),
    }
    model = LoadedModel(module=module.eval(),
                        arch={"kind": "family", "family": entry.family, "config": config},
                        input_shape=tuple(int(s) for s in config["input_shape"]),
                        num_classes=int(config["num_classes"]), metadata=dict(metadata))
    save_model(model, path, metadata, spec=_spec_record(model))
    return ZooModelInfo(entry.name, rel, entry.family, config, entry.dataset, entry.seed,
                        entry.epochs, result.test_accuracy, result.test_loss, entry.entry_hash())


def _spec_record(model: LoadedModel) -> dict[str, Any] | None:
    """The model's permutation spec, stored in its file so that opening it with an empty spec
    cache (another machine, a shared zoo) needs no export; found once per architecture here
    (the user cache keeps it). None when discovery fails: the file is then saved without it."""
    try:
        return spec_record(model, discover_spec(model))
    except MalError:
        return None


def _trained_under() -> dict[str, Any]:
    """The numerics a zoo model is trained under (torch version and the pinned settings)."""
    n = numerics()
    return {"torch": n["torch"], "aten_capability": n["aten_capability"],
            "mkl_cbwr": n["env"]["MKL_CBWR"], "torch_threads": n["torch_threads"],
            "deterministic_algorithms": n["deterministic_algorithms"], "mkldnn": n["mkldnn"]}


def _parse_info(raw: Any, index_path: Path) -> ZooModelInfo:
    if not isinstance(raw, dict):
        raise MalError(f"{index_path}: corrupt zoo index (an entry is not an object)")
    try:
        info = ZooModelInfo(
            name=str(raw["name"]), path=str(raw["path"]), family=str(raw["family"]),
            config=dict(raw["config"]), dataset=str(raw["dataset"]), seed=int(raw["seed"]),
            epochs=int(raw.get("epochs", 0)), test_accuracy=float(raw["test_accuracy"]),
            test_loss=float(raw.get("test_loss", math.nan)), entry_hash=str(raw.get("entry_hash", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalError(f"{index_path}: corrupt zoo index (entry {raw.get('name', '?')!r}: {exc!r})") from None
    rel = PurePosixPath(info.path)
    # The index only ever names files inside its own folder; anything else is not ours.
    if rel.is_absolute() or ".." in rel.parts or not info.path:
        raise MalError(f"{index_path}: corrupt zoo index (path {info.path!r} leaves the zoo folder)")
    return info


def load_zoo_index(dir: Path | str) -> ZooIndex:
    """Read ``zoo.json`` of a zoo folder.

    Raises MalError when the folder has no index (the zoo was never built there) or the index is
    not a valid zoo index.
    """
    dir = Path(dir)
    index_path = dir / INDEX_NAME
    if not index_path.is_file():
        raise MalError(f"{index_path}: no zoo index; build the demo zoo into {dir} first")
    try:
        doc = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalError(f"{index_path}: corrupt zoo index ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise MalError(f"{index_path}: corrupt zoo index (no 'entries' list)")
    if doc.get("version") != INDEX_VERSION:
        raise MalError(f"{index_path}: zoo index version {doc.get('version')!r} is not supported "
                       f"(expected {INDEX_VERSION}); rebuild the zoo")
    infos = tuple(_parse_info(raw, index_path) for raw in doc["entries"])
    return ZooIndex(infos, dir)
