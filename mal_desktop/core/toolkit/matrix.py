"""The models x datasets matrix, with a result cache that makes re-runs and resumes free.

Every cell (one model on one dataset's test split) runs the evaluation pipeline once. Its result
is cached under ``cache_dir`` keyed by (model content hash, dataset fingerprint,
EVALUATOR_VERSION, pipeline stages): a small JSON file with the metrics and per-category scores,
plus a ``.npz`` file with the per-sample scores for drill-down (confusion matrix, per-class
accuracy). Both are written atomically, the ``.npz`` first, so a cell whose JSON exists is
complete. Hence adding one model to a matrix computes one new row, a second run computes nothing,
and a cancelled run resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generator, Sequence

import numpy as np

from ..user_dirs import user_cache_dir
from ... import __version__
from ..errors import DatasetError, MalError
from ..io.files import atomic_write, atomic_write_text
from ..io.model import LoadedModel
from ..progress import CancelToken, ProgressEvent, never_cancelled, sub_job
from ..evaluate.datasets import Dataset, load_dataset
from ..evaluate.evaluator import check_data_fits
from ..evaluate.metric_registry import SampleScores, compute_sample_metrics, get_metric, metric_names
from .model_refs import ModelRef, parse_model_ref
from ..evaluate.pipeline import PipelineSpec, run_pipeline, samples_of

# Bump when a change in the evaluator or the built-in stages changes numbers: old cache
# entries then simply stop matching.
EVALUATOR_VERSION = 1
CACHE_FORMAT = 1
DEFAULT_METRICS = ("accuracy", "loss", "ece", "per_class_accuracy")


def default_eval_cache_dir() -> Path:
    """$MAL_EVAL_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/mal_desktop/eval."""
    return user_cache_dir("eval", "MAL_EVAL_CACHE")


def cell_key(model_hash: str, dataset_fingerprint: str, pipeline: PipelineSpec) -> str:
    """The cache key of one cell (hex, 32 characters)."""
    text = json.dumps([model_hash, dataset_fingerprint, EVALUATOR_VERSION, pipeline.key()])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class MatrixCell:
    """One model on one dataset.

    model / dataset: the reference and dataset texts (row and column ids). metrics: the
    requested metrics. per_category: category tag -> {"n": count, scalar metric: value}.
    cached: read from the cache (False: computed in this run). samples_file: the per-sample
    ``.npz``. error: one line when the cell could not be computed (then metrics are empty).
    mismatch: the error is that the model does not read this kind of data (text for an image
    model, images for a language model): the cell does not apply, nothing failed.
    """

    model: str
    dataset: str
    key: str
    metrics: dict[str, Any] = field(default_factory=dict)
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    n: int = 0
    cached: bool = False
    samples_file: str | None = None
    error: str | None = None
    mismatch: bool = False

    def samples(self) -> SampleScores:
        """The cell's per-sample scores (for drill-down), read from its cached ``.npz``.

        Raises MalError when the cell has none (it failed) or the file is missing, truncated or
        not a scores file (evaluating again recomputes it).
        """
        if self.samples_file is None:
            raise MalError(f"{self.model} on {self.dataset}: no per-sample scores "
                           f"({self.error or 'missing'})")
        return _read_samples(Path(self.samples_file))

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "key": self.key,
                "metrics": self.metrics, "per_category": self.per_category, "n": self.n,
                "cached": self.cached, "samples": self.samples_file, "error": self.error,
                "not_applicable": self.mismatch}


@dataclass(frozen=True)
class MatrixResult:
    """The matrix: rows (models), columns (datasets), cells in row-major order.

    models: per row {"ref", "name", "kind", "hash"}. datasets: per column {"name",
    "fingerprint"}. computed / cached: how many cells this run computed / read from the cache.
    """

    models: tuple[dict[str, str], ...]
    datasets: tuple[dict[str, str], ...]
    metrics: tuple[str, ...]
    cells: tuple[MatrixCell, ...]
    computed: int
    cached: int
    cache_dir: Path
    pipeline: str

    def cell(self, model: str, dataset: str) -> MatrixCell:
        """The cell of row ``model`` (reference text) and column ``dataset``. Raises KeyError."""
        for c in self.cells:
            if c.model == model and c.dataset == dataset:
                return c
        raise KeyError((model, dataset))

    def samples(self, model: str, dataset: str) -> SampleScores:
        """The per-sample scores of a cell (:meth:`MatrixCell.samples`). Raises KeyError for an
        unknown cell, MalError when its scores are missing or unreadable."""
        return self.cell(model, dataset).samples()

    def confusion_matrix(self, model: str, dataset: str) -> np.ndarray:
        """counts[true class, predicted class] of a cell (num_classes x num_classes int64)."""
        s = self.samples(model, dataset)
        out = np.zeros((s.num_classes, s.num_classes), dtype=np.int64)
        np.add.at(out, (s.labels, s.preds), 1)
        return out

    @property
    def errors(self) -> list[str]:
        """Cells that failed (not those whose data the model does not read)."""
        return [f"{c.model} on {c.dataset}: {c.error}" for c in self.cells
                if c.error and not c.mismatch]

    @property
    def not_applicable(self) -> list[str]:
        """Cells whose data the model does not read, with the reason."""
        return [f"{c.model} on {c.dataset}: {c.error}" for c in self.cells if c.mismatch]

    def to_json(self) -> dict[str, Any]:
        return {"mal_desktop": __version__, "evaluator_version": EVALUATOR_VERSION,
                "pipeline": self.pipeline,
                "cache_dir": str(self.cache_dir), "metrics": list(self.metrics),
                "models": [dict(m) for m in self.models],
                "datasets": [dict(d) for d in self.datasets],
                "cells": [c.to_json() for c in self.cells],
                "computed": self.computed, "cached": self.cached}

    def to_csv(self) -> str:
        """One line per cell; per-category metrics become columns ``name[tag]``."""
        columns: list[str] = []
        for name in self.metrics:
            if get_metric(name).per_category:
                tags: list[str] = []
                for c in self.cells:
                    tags += [t for t in c.metrics.get(name, {}) if t not in tags]
                # class indices in their order (the union over cells put '10' before '2')
                tags.sort(key=lambda t: (0, int(t), "") if t.isdigit() else (1, 0, t))
                columns += [f"{name}[{t}]" for t in tags]
            else:
                columns.append(name)
        hashes = {m["ref"]: m["hash"] for m in self.models}
        prints = {d["name"]: d["fingerprint"] for d in self.datasets}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["model", "model_hash", "dataset", "dataset_fingerprint", "n", "cached",
                         "error", *columns])
        for c in self.cells:
            values = []
            for col in columns:
                if col.endswith("]") and "[" in col:
                    name, tag = col[:-1].split("[", 1)
                    values.append(_csv_number(c.metrics.get(name, {}).get(tag)))
                else:
                    values.append(_csv_number(c.metrics.get(col)))
            writer.writerow([c.model, hashes.get(c.model, ""), c.dataset, prints.get(c.dataset, ""),
                             c.n, int(c.cached), c.error or "", *values])
        return buf.getvalue()


def _csv_number(v: Any) -> str:
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, (int, float)) else str(v)


# -- cache files --------------------------------------------------------------------------
def _write_samples(path: Path, scores: SampleScores) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **scores.to_arrays())

    atomic_write(path, write)


def _read_samples(path: Path) -> SampleScores:
    try:
        with np.load(path, allow_pickle=False) as data:
            return SampleScores.from_arrays(data)
    except Exception as exc:  # missing, truncated or foreign: the cell is recomputed
        raise MalError(f"{path}: unreadable per-sample scores ({exc})") from None


def _read_entry(json_path: Path, key: str) -> dict[str, Any] | None:
    """The cached entry for ``key``, or None when absent, corrupt or of another format."""
    try:
        entry = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or \
            entry.get("format") != CACHE_FORMAT or \
            entry.get("evaluator_version") != EVALUATOR_VERSION or \
            not isinstance(entry.get("metrics"), dict) or \
            not (json_path.with_suffix(".npz")).is_file():
        return None
    return entry


def _write_entry(json_path: Path, entry: dict[str, Any]) -> None:
    atomic_write_text(json_path, json.dumps(entry, indent=1, sort_keys=True) + "\n")


def _complete_entry(entry: dict[str, Any], json_path: Path, wanted: Sequence[str],
                    scalar: Sequence[str]) -> dict[str, Any]:
    """Add metrics registered after the entry was written, from its per-sample scores."""
    missing = [m for m in wanted if m not in entry["metrics"]]
    missing_cat = [m for m in scalar
                   if any(m not in v for v in entry.get("per_category", {}).values())]
    if not missing and not missing_cat:
        return entry
    scores = _read_samples(json_path.with_suffix(".npz"))
    entry["metrics"].update(_plain(compute_sample_metrics(missing, scores)))
    for tag, values in entry.get("per_category", {}).items():
        part = scores.subset(scores.categories == tag)
        values.update(_plain(compute_sample_metrics([m for m in missing_cat if m not in values],
                                                    part)))
    _write_entry(json_path, entry)
    return entry


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: ({t: float(x) for t, x in v.items()} if isinstance(v, dict) else float(v))
            for k, v in values.items()}


# -- the job ------------------------------------------------------------------------------
def eval_matrix_job(model_refs: Sequence[str | ModelRef], dataset_names: Sequence[str],
                    metrics: Sequence[str] | None = None, cache_dir: Path | str | None = None,
                    cancel: CancelToken | None = None, *, zoo_dir: Path | str | None = None,
                    arch: str | None = None, pipeline: PipelineSpec | None = None,
                    batch_size: int = 512) -> Generator[ProgressEvent, None, MatrixResult]:
    """Evaluate every model on every dataset (test split), reusing cached cells.

    model_refs: reference texts (file, ``zoo:NAME``, plan ``.json``) or ModelRef objects.
    dataset_names: registered dataset names or ``.npz`` files.
    metrics: sample-metric names reported per cell (default: accuracy, loss, ece,
        per_class_accuracy); every registered sample metric is cached either way.
    cache_dir: result cache (default :func:`default_eval_cache_dir`).
    zoo_dir / arch: passed to :func:`parse_model_ref`. pipeline: the stages (default spec).
    Yields stage "matrix" events, one per cell, whose payload is the finished MatrixCell.
    Returns the MatrixResult. A model that cannot be loaded or run gives error cells (listed in
    ``MatrixResult.errors``), not an exception.
    Raises MalError for an unknown metric, stage, dataset or model reference, or no models /
    datasets; Cancelled when cancelled (finished cells stay cached).
    """
    cancel = cancel if cancel is not None else never_cancelled()
    spec = pipeline or PipelineSpec()
    spec.validate()
    wanted = list(DEFAULT_METRICS if metrics is None else metrics)
    for name in wanted:
        get_metric(name, "sample")
    scalar_all = [m for m in metric_names("sample") if not get_metric(m).per_category]
    if not model_refs:
        raise MalError("no models to evaluate: name at least one model")
    if not dataset_names:
        raise MalError("no datasets to evaluate on: name at least one dataset")
    root = Path(cache_dir) if cache_dir is not None else default_eval_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    refs = _unique_refs(model_refs, zoo_dir, arch)
    datasets = [(d, load_dataset(d)) for d in dict.fromkeys(dataset_names)]
    yield ProgressEvent("matrix", 0.0, f"hashing {len(refs)} models")
    rows: list[_Row] = []
    for ref in refs:
        cancel.raise_if_cancelled()
        rows.append(_Row(ref, ref.content_hash()))
    prints = [data.fingerprint() for _, data in datasets]

    settings = _CellSettings(root, spec, wanted, scalar_all, batch_size)
    # A language model's "classes" are its token ids: by default its cells leave out the
    # accuracy per token id (a CSV of 500 columns no one reads); asked for by name, it stays.
    text_settings = settings if metrics is not None else replace(
        settings, wanted=[m for m in wanted if m != "per_class_accuracy"])
    total = len(rows) * len(datasets)
    cells: list[MatrixCell] = []
    for row in rows:
        for (dname, data), fingerprint in zip(datasets, prints):
            cancel.raise_if_cancelled()
            cell = yield from _cell_job(row, dname, data, fingerprint,
                                        text_settings if data.text is not None else settings,
                                        len(cells) / total, cancel)
            cells.append(cell)
            done = len(cells)
            what = "cached" if cell.cached else ("failed" if cell.error else "computed")
            yield ProgressEvent("matrix", done / total,
                                f"{row.ref.name} on {dname}: {what} ({done}/{total})", cell)
    return MatrixResult(
        models=tuple({"ref": r.ref.text, "name": r.ref.name, "kind": r.ref.kind,
                      "hash": r.model_hash} for r in rows),
        datasets=tuple({"name": d, "fingerprint": f} for (d, _), f in zip(datasets, prints)),
        metrics=tuple(wanted), cells=tuple(cells),
        computed=sum(1 for c in cells if not c.cached and c.error is None),
        cached=sum(1 for c in cells if c.cached), cache_dir=root, pipeline=spec.key())


def _unique_refs(model_refs: Sequence[str | ModelRef], zoo_dir: Path | str | None,
                 arch: str | None) -> list[ModelRef]:
    """The references parsed, in order, each reference text once (the matrix's rows)."""
    refs: list[ModelRef] = []
    for r in model_refs:
        ref = r if isinstance(r, ModelRef) else parse_model_ref(r, zoo_dir, arch)
        if all(ref.text != other.text for other in refs):
            refs.append(ref)
    return refs


@dataclass
class _Row:
    """One row of the matrix: its model, loaded on the first cell the cache cannot answer (or
    the reason it could not be loaded, which every later cell of the row reports)."""

    ref: ModelRef
    model_hash: str
    model: LoadedModel | None = None
    load_error: str | None = None


@dataclass(frozen=True)
class _CellSettings:
    """What every cell of one run shares: the cache folder, the stages, the metrics asked for
    (and every registered scalar one, which the cache keeps complete)."""

    root: Path
    spec: PipelineSpec
    wanted: list[str]
    scalar_all: list[str]
    batch_size: int


def _cell_job(row: _Row, dname: str, data: Dataset, fingerprint: str, settings: _CellSettings,
              at: float, cancel: CancelToken) -> Generator[ProgressEvent, None, MatrixCell]:
    """Job: one cell, read from the cache when it holds it, else computed (and cached).

    A model that cannot be loaded or run gives an error cell, not an exception. ``at`` is the
    run's progress so far: loading the row's model (a plan: assembling it) reports there.
    """
    key = cell_key(row.model_hash, fingerprint, settings.spec)
    json_path = settings.root / f"{key}.json"
    cell = _cached_cell(row.ref.text, dname, key, json_path, settings)
    if cell is not None:
        return cell
    if row.model is None and row.load_error is None:
        try:
            row.model = yield from sub_job(row.ref.load_job(cancel), at, at)
        except MalError as exc:
            row.load_error = str(exc)
    if row.load_error is not None:
        return MatrixCell(row.ref.text, dname, key, error=row.load_error)
    try:
        check_data_fits(row.model, data)
    except DatasetError as exc:
        # text for an image model, images for a language model: the cell does not apply;
        # images of another size are an error (a wrong dataset for this model)
        other_kind = (data.text is not None) != (row.model.id_range() is not None)
        return MatrixCell(row.ref.text, dname, key, error=str(exc), mismatch=other_kind)
    try:
        return _compute_cell(row.ref, row.model, dname, data, key, json_path, settings.wanted,
                             settings.spec, settings.batch_size, row.model_hash, fingerprint)
    except MalError as exc:
        return MatrixCell(row.ref.text, dname, key, error=str(exc))


def _cached_cell(model: str, dname: str, key: str, json_path: Path,
                 settings: _CellSettings) -> MatrixCell | None:
    """The cell from its cache entry (completed with metrics registered since), or None when
    the cache has no usable entry."""
    entry = _read_entry(json_path, key)
    if entry is None:
        return None
    try:
        entry = _complete_entry(entry, json_path, settings.wanted, settings.scalar_all)
    except MalError:
        return None  # per-sample file damaged: recompute the cell
    return _cell_from_entry(model, dname, key, entry, settings.wanted, json_path, True)


def _compute_cell(ref: ModelRef, model: LoadedModel, dname: str, data, key: str,
                  json_path: Path, wanted: Sequence[str], spec: PipelineSpec, batch_size: int,
                  model_hash: str, fingerprint: str) -> MatrixCell:
    # All registered sample metrics go into the cache, so asking for another one later is free.
    result = run_pipeline(model, samples_of(data), metric_names("sample"), spec, batch_size)
    npz_path = json_path.with_suffix(".npz")
    _write_samples(npz_path, result.scores)
    entry = {"format": CACHE_FORMAT, "key": key, "evaluator_version": EVALUATOR_VERSION,
             "pipeline": spec.key(), "model_hash": model_hash, "model": ref.text,
             "dataset": dname, "dataset_fingerprint": fingerprint, "n": len(result.scores),
             "metrics": _plain(result.metrics), "per_category": result.per_category,
             "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_entry(json_path, entry)
    return _cell_from_entry(ref.text, dname, key, entry, wanted, json_path, False)


def _cell_from_entry(model: str, dataset: str, key: str, entry: dict[str, Any],
                     wanted: Sequence[str], json_path: Path, cached: bool) -> MatrixCell:
    metrics = {m: entry["metrics"][m] for m in wanted}
    return MatrixCell(model, dataset, key, metrics,
                      {t: dict(v) for t, v in entry.get("per_category", {}).items()},
                      int(entry.get("n", 0)), cached, str(json_path.with_suffix(".npz")))


def format_matrix(result: MatrixResult, metric: str | None = None) -> str:
    """A plain-text table of one scalar metric (default: the first scalar one requested)."""
    scalar = [m for m in result.metrics if not get_metric(m).per_category]
    metric = metric or (scalar[0] if scalar else None)
    if metric is None:
        return "(no scalar metric requested)"
    names = [m["ref"] for m in result.models]
    cols = [d["name"] for d in result.datasets]
    width = max(12, *(len(c) for c in cols))
    first = max(8, *(len(n) for n in names))
    lines = [f"{metric:<{first}}  " + "  ".join(f"{c:>{width}}" for c in cols)]
    for name in names:
        row = []
        for col in cols:
            c = result.cell(name, col)
            v = c.metrics.get(metric)
            row.append("n/a" if c.mismatch else "error" if c.error else _fmt(metric, v))
        lines.append(f"{name:<{first}}  " + "  ".join(f"{x:>{width}}" for x in row))
    return "\n".join(lines)


def cache_line(result: MatrixResult) -> str:
    """How many cells were computed and how many read from the cache, and where it is."""
    return f"{result.computed} computed, {result.cached} from the cache ({result.cache_dir})"


def _fmt(metric: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2%}" if metric == "accuracy" else f"{v:.4f}"


__all__ = ["EVALUATOR_VERSION", "DEFAULT_METRICS", "MatrixCell", "MatrixResult", "cell_key",
           "cache_line", "default_eval_cache_dir", "eval_matrix_job", "format_matrix"]
