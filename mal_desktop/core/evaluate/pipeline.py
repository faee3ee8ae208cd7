"""The staged evaluation data flow, each stage chosen by name from its own registry.

    samples --inference--> logits --postprocess--> log-probabilities
            --scores--> per-sample scores (correct, loss, confidence)
            --aggregate--> metrics overall and per category (class tags)

A :class:`Samples` is the common sample schema every dataset is read into: inputs, labels and one
category tag per sample (the class name unless the dataset says otherwise). A text dataset is
scored per token by the next-token scorer (:func:`.evaluator.token_scores`, whose logits are
never all kept) in place of the inference, post-processing and scores stages; every token is a
sample, tagged with its document, and aggregation runs as for any dataset. A
:class:`PipelineSpec` names one stage of each kind; its :meth:`PipelineSpec.key` enters the
result-cache key, so a different stage never reuses another's cached numbers.

Adding a stage is one function and one registration, e.g. a temperature-scaled post-processing::

    @register_stage("postprocess", "temperature-2", "softmax of logits / 2")
    def _t2(logits: np.ndarray) -> np.ndarray:
        return log_softmax(logits / 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import DatasetError, MalError
from ..io.model import LoadedModel
from .datasets import Dataset
from .evaluator import fit_inputs, predict_model_logits, token_scores
from .metric_registry import (SampleScores, compute_sample_metrics, get_metric,
                              metric_names)

STAGE_KINDS = ("inference", "postprocess", "scores", "aggregate")


@dataclass(frozen=True)
class Samples:
    """The common sample schema: inputs (N, ...), int64 labels (N,), str category tags (N,).

    text: for a text dataset, the dataset and split to score per token (the arrays are then
    empty: the tokens depend on the model's tokenizer).
    """

    name: str
    inputs: torch.Tensor
    labels: torch.Tensor
    categories: np.ndarray
    num_classes: int
    text: tuple[Dataset, str] | None = None


def samples_of(data: Dataset, split: str = "test") -> Samples:
    """A dataset split read into the common sample schema; categories are the class names.

    Raises DatasetError for an unknown or empty split.
    """
    if split not in ("test", "train"):
        raise DatasetError(f"unknown split {split!r} of dataset {data.name}; use 'test' or 'train'")
    if data.text is not None:
        if not data.text.docs(split):
            raise DatasetError(f"dataset {data.name} has no {split} text")
        return Samples(data.name, data.x_test, data.y_test, np.zeros(0, dtype=np.str_), 0,
                       (data, split))
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    if len(y) == 0:
        raise DatasetError(f"dataset {data.name} has no {split} samples")
    names = list(data.class_names) or [str(i) for i in range(data.num_classes)]
    labels = y.numpy().astype(np.int64)
    tags = np.asarray([names[c] if 0 <= c < len(names) else str(c) for c in labels], dtype=np.str_)
    return Samples(data.name, x, y.to(torch.int64), tags, int(data.num_classes))


@dataclass(frozen=True)
class Stage:
    """A registered stage: ``fn`` with the signature of its kind (see the module docstring)."""

    kind: str
    name: str
    fn: Callable[..., Any]
    description: str


STAGES: dict[str, dict[str, Stage]] = {kind: {} for kind in STAGE_KINDS}


def register_stage(kind: str, name: str, description: str) -> Callable:
    """Decorator: register a stage function of ``kind`` under ``name``.

    Signatures: inference (model: LoadedModel, samples: Samples, batch_size: int) -> logits
    (N, C) float array; postprocess (logits) -> log-probabilities (N, C) float64; scores
    (log_probs, samples) -> SampleScores; aggregate (scores, metric names) -> {category:
    {metric: value}}. Raises ValueError for an unknown kind or a taken name.
    """
    if kind not in STAGE_KINDS:
        raise ValueError(f"stage kind must be one of {STAGE_KINDS}, got {kind!r}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in STAGES[kind]:
            raise ValueError(f"a {kind} stage named {name!r} is already registered")
        STAGES[kind][name] = Stage(kind, name, fn, description)
        return fn

    return wrap


def get_stage(kind: str, name: str) -> Stage:
    """The stage ``name`` of ``kind``. Raises MalError naming the registered choices."""
    stage = STAGES.get(kind, {}).get(name)
    if stage is None:
        raise MalError(f"unknown {kind} stage {name!r}; known: {', '.join(STAGES.get(kind, {}))}")
    return stage


@dataclass(frozen=True)
class PipelineSpec:
    """One stage name per kind."""

    inference: str = "batch"
    postprocess: str = "softmax"
    scores: str = "classification"
    aggregate: str = "category"

    def key(self) -> str:
        """Stable text naming the stages (part of the result-cache key)."""
        return "/".join((self.inference, self.postprocess, self.scores, self.aggregate))

    def validate(self) -> None:
        """Raise MalError when a stage name is not registered."""
        for kind in STAGE_KINDS:
            get_stage(kind, getattr(self, kind))


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run returns: the per-sample scores, the requested metrics over all
    samples, and per category the scalar metrics (plus ``n``, the category's sample count)."""

    scores: SampleScores
    metrics: dict[str, Any]
    per_category: dict[str, dict[str, float]]


def run_pipeline(model: LoadedModel, samples: Samples, metrics: Sequence[str] | None = None,
                 spec: PipelineSpec | None = None, batch_size: int = 512) -> PipelineResult:
    """Run the four stages of ``spec`` on ``samples`` and compute ``metrics``.

    metrics: registered sample-metric names (default: all of them).
    Raises MalError for an unknown stage or metric, DatasetError when the samples do not fit the
    model (input size, labels beyond its classes).
    """
    spec = spec or PipelineSpec()
    spec.validate()
    names = list(metrics) if metrics is not None else metric_names("sample")
    for n in names:
        get_metric(n, "sample")
    if samples.text is not None:
        tokens = token_scores(model, samples.text[0], samples.text[1], batch_size)
        scores = SampleScores(tokens.labels, tokens.preds, tokens.correct, tokens.loss,
                              tokens.confidence, tokens.categories, int(model.num_classes))
    else:
        logits = get_stage("inference", spec.inference).fn(model, samples, batch_size)
        log_probs = get_stage("postprocess", spec.postprocess).fn(logits)
        scores = get_stage("scores", spec.scores).fn(log_probs, samples)
    overall = compute_sample_metrics(names, scores)
    per_category = get_stage("aggregate", spec.aggregate).fn(scores, names)
    return PipelineResult(scores, overall, per_category)


# -- built-in stages ----------------------------------------------------------------------
@register_stage("inference", "batch", "the model on batches of inputs, on the compute device")
def _batch_inference(model: LoadedModel, samples: Samples, batch_size: int) -> np.ndarray:
    x = fit_inputs(model, samples.inputs, samples.name)
    labels = samples.labels
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= model.num_classes):
        raise DatasetError(f"dataset {samples.name} has labels {int(labels.min())}.."
                           f"{int(labels.max())}, model {model.name} has only "
                           f"{model.num_classes} classes")
    return predict_model_logits(model, x, batch_size).numpy()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64, stable for large logits (non-finite rows stay so)."""
    z = np.asarray(logits, dtype=np.float64)
    shift = z.max(axis=1, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    z = z - shift
    with np.errstate(divide="ignore", invalid="ignore"):
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@register_stage("postprocess", "softmax", "class probabilities (log-softmax of the logits)")
def _softmax(logits: np.ndarray) -> np.ndarray:
    return log_softmax(logits)


@register_stage("scores", "classification", "per sample: prediction, correct, cross-entropy, "
                "confidence (max probability)")
def _classification_scores(log_probs: np.ndarray, samples: Samples) -> SampleScores:
    labels = samples.labels.numpy().astype(np.int64)
    n = len(labels)
    preds = np.argmax(log_probs, axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
    loss = -log_probs[np.arange(n), labels] if n else np.zeros(0)
    with np.errstate(invalid="ignore"):
        confidence = np.exp(log_probs.max(axis=1)) if n else np.zeros(0)
    # A row of NaN logits gives NaN loss; keep it (reported), but it is never "correct".
    correct = (preds == labels) & np.isfinite(loss)
    return SampleScores(labels, preds, correct, loss.astype(np.float64),
                        confidence.astype(np.float64), samples.categories,
                        int(log_probs.shape[1]) if log_probs.ndim == 2 else 0)


def _scalar_names(names: Sequence[str]) -> list[str]:
    return [n for n in names if not get_metric(n, "sample").per_category]


@register_stage("aggregate", "category", "each scalar metric per category tag (class)")
def _per_category(scores: SampleScores, names: Sequence[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    scalar = _scalar_names(names)
    for tag in sorted(set(scores.categories.tolist()), key=_natural):
        part = scores.subset(scores.categories == tag)
        values = compute_sample_metrics(scalar, part)
        out[tag] = {"n": float(len(part)), **{k: float(v) for k, v in values.items()}}
    return out


@register_stage("aggregate", "none", "overall metrics only (no per-category table)")
def _no_categories(scores: SampleScores, names: Sequence[str]) -> dict[str, dict[str, float]]:
    return {}


def _natural(tag: str) -> tuple[int, Any]:
    """Sort "2" before "10" while keeping non-numeric tags in text order after them."""
    return (0, int(tag)) if tag.isdigit() else (1, tag)
