"""Metrics in a name-keyed registry: small functions over per-sample arrays or over curves.

Two kinds of metric:

- ``"sample"`` metrics take a :class:`SampleScores` (one row per evaluated sample: label,
  prediction, correctness, loss, confidence, category tag) and return a float, or a dict
  ``tag -> float`` when ``per_category`` is set. Since they only read the per-sample arrays, a
  cached evaluation can compute a newly registered metric without running the model again.
- ``"curve"`` metrics take a :class:`CurveSeries` (one interpolation curve along lambda, see
  mal_method.md section 7) and return a float.

Adding a metric is one function and one ``@register_metric(...)`` line::

    @register_metric("error_rate", "sample", "1 - accuracy", higher_is_better=False)
    def _error_rate(s: SampleScores) -> float:
        return 1.0 - float(s.correct.mean())
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MalError
from .metrics import barrier as _barrier
from .metrics import mean_loss as _mean_loss
from .metrics import perplexity_of
from .metrics import threshold_lambda as _threshold

ECE_BINS = 15
METRIC_KINDS = ("sample", "curve")


@dataclass(frozen=True)
class SampleScores:
    """Per-sample results of one model on one set of samples (all arrays have length N).

    labels / preds: int64 true and predicted classes. correct: bool, preds == labels.
    loss: float64 cross-entropy of each sample (-log p(label)). confidence: float64 max
    predicted probability. categories: str tag of each sample (by default its class name).
    num_classes: size of the model's class axis.
    """

    labels: np.ndarray
    preds: np.ndarray
    correct: np.ndarray
    loss: np.ndarray
    confidence: np.ndarray
    categories: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in ("preds", "correct", "loss", "confidence", "categories"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"SampleScores.{name} has {len(getattr(self, name))} rows, "
                                 f"labels has {n}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> "SampleScores":
        """The samples where boolean ``mask`` is true."""
        return SampleScores(self.labels[mask], self.preds[mask], self.correct[mask],
                            self.loss[mask], self.confidence[mask], self.categories[mask],
                            self.num_classes)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for a .npz file; categories as a fixed-width unicode array, no pickle)."""
        return {"labels": self.labels, "preds": self.preds, "correct": self.correct,
                "loss": self.loss, "confidence": self.confidence,
                "categories": np.asarray(self.categories, dtype=np.str_),
                "num_classes": np.asarray(self.num_classes, dtype=np.int64)}

    @staticmethod
    def from_arrays(arrays: Any) -> "SampleScores":
        """Inverse of :meth:`to_arrays` (accepts a loaded ``np.load`` archive)."""
        return SampleScores(np.asarray(arrays["labels"], dtype=np.int64),
                            np.asarray(arrays["preds"], dtype=np.int64),
                            np.asarray(arrays["correct"], dtype=bool),
                            np.asarray(arrays["loss"], dtype=np.float64),
                            np.asarray(arrays["confidence"], dtype=np.float64),
                            np.asarray(arrays["categories"], dtype=np.str_),
                            int(arrays["num_classes"]))


@dataclass(frozen=True)
class CurveSeries:
    """One interpolation curve: loss and accuracy on the base's task at each lambda.

    target_accuracy: accuracy on the target model's own task at the same lambdas, when measured
    (needed by ``target_task_accuracy``). epsilon: the threshold tolerance (0.01 = one point).
    """

    lambdas: tuple[float, ...]
    loss: tuple[float, ...]
    accuracy: tuple[float, ...]
    target_accuracy: tuple[float, ...] | None = None
    epsilon: float = 0.01


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    kind: "sample" | "curve". per_category: the function returns a dict tag -> float.
    higher_is_better: the direction a table should colour (None when neither).
    text_only: it means something for text scored token by token only (perplexity: a
    classifier's exp(loss) is no number anyone reads); views leave it out for other data.
    """

    name: str
    kind: str
    fn: Callable[[Any], Any]
    description: str
    per_category: bool = False
    higher_is_better: bool | None = None
    text_only: bool = False


METRICS: dict[str, Metric] = {}


def register_metric(name: str, kind: str, description: str, *, per_category: bool = False,
                    higher_is_better: bool | None = None, text_only: bool = False) -> Callable:
    """Decorator: register ``fn(SampleScores) -> value`` or ``fn(CurveSeries) -> float``.

    Raises ValueError for an unknown kind or a name already taken (a programming error).
    """
    if kind not in METRIC_KINDS:
        raise ValueError(f"metric kind must be one of {METRIC_KINDS}, got {kind!r}")

    def wrap(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if name in METRICS:
            raise ValueError(f"a metric named {name!r} is already registered")
        METRICS[name] = Metric(name, kind, fn, description, per_category, higher_is_better,
                               text_only)
        return fn

    return wrap


def get_metric(name: str, kind: str | None = None) -> Metric:
    """The metric called ``name`` (of ``kind`` when given). Raises MalError naming the choices."""
    metric = METRICS.get(name)
    if metric is None or (kind is not None and metric.kind != kind):
        known = ", ".join(metric_names(kind))
        raise MalError(f"unknown {kind + ' ' if kind else ''}metric {name!r}; known: {known}")
    return metric


def metric_names(kind: str | None = None) -> list[str]:
    """Registered metric names (of ``kind`` when given), in registration order."""
    return [m.name for m in METRICS.values() if kind is None or m.kind == kind]


def compute_sample_metrics(names: Sequence[str], scores: SampleScores) -> dict[str, Any]:
    """Each named sample metric of ``scores``: name -> float (or dict for per-category ones).

    Raises MalError for a name that is not a registered sample metric.
    """
    metrics = [get_metric(n, "sample") for n in names]
    return {m.name: m.fn(scores) for m in metrics}


def compute_curve_metrics(names: Sequence[str], series: CurveSeries) -> dict[str, float]:
    """Each named curve metric of ``series``. Raises MalError for an unknown name."""
    metrics = [get_metric(n, "curve") for n in names]
    return {m.name: float(m.fn(series)) for m in metrics}


# -- sample metrics -----------------------------------------------------------------------
@register_metric("accuracy", "sample", "fraction of samples whose top class is the label",
                 higher_is_better=True)
def accuracy(s: SampleScores) -> float:
    """Mean of ``correct``; NaN for no samples."""
    return float(s.correct.mean()) if len(s) else math.nan


@register_metric("loss", "sample", "mean cross-entropy (-log p(label))", higher_is_better=False)
def mean_sample_loss(s: SampleScores) -> float:
    """Mean per-sample cross-entropy; NaN for no samples, inf when a sample's loss is inf."""
    return float(s.loss.mean()) if len(s) else math.nan


@register_metric("perplexity", "sample", "exp(mean loss): for language models, the effective "
                 "number of equally likely next tokens", higher_is_better=False, text_only=True)
def perplexity(s: SampleScores) -> float:
    """exp of the mean per-sample (per-token) cross-entropy; NaN for no samples, inf when the
    mean loss is inf or exp overflows."""
    return perplexity_of(float(s.loss.mean())) if len(s) else math.nan


@register_metric("per_class_accuracy", "sample", "accuracy of the samples of each true class",
                 per_category=True, higher_is_better=True)
def per_class_accuracy(s: SampleScores) -> dict[str, float]:
    """Class index (as a string) -> accuracy over the samples with that label.

    Classes with no sample in ``s`` are left out (an accuracy of nothing is undefined).
    """
    out: dict[str, float] = {}
    for c in np.unique(s.labels):
        mask = s.labels == c
        out[str(int(c))] = float(s.correct[mask].mean())
    return out


@register_metric("ece", "sample", f"expected calibration error ({ECE_BINS} equal-width bins)",
                 higher_is_better=False)
def expected_calibration_error(s: SampleScores, bins: int = ECE_BINS) -> float:
    """sum over bins b of (n_b / N) * |accuracy_b - mean confidence_b|.

    Bin b covers confidences in ((b-1)/bins, b/bins]; confidence 0 falls in the first bin.
    NaN for no samples or a non-finite confidence.
    """
    if not len(s) or not np.isfinite(s.confidence).all():
        return math.nan  # calibration of a model that produced NaN is undefined
    conf = np.clip(s.confidence, 0.0, 1.0)
    # ceil(conf * bins) - 1 puts a confidence exactly on an upper edge into the lower bin; the
    # small tolerance keeps float products like 0.2 * 15 = 3.0000000000000004 on their edge.
    idx = np.clip(np.ceil(conf * bins - 1e-9).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        n_b = int(mask.sum())
        if n_b:
            total += n_b / len(s) * abs(float(s.correct[mask].mean()) - float(conf[mask].mean()))
    return total


# -- curve metrics (mal_method.md section 7) -----------------------------------------------
@register_metric("barrier", "curve", "max excess of the loss over the straight line between "
                 "the end points", higher_is_better=False)
def curve_barrier(c: CurveSeries) -> float:
    return _barrier(c.lambdas, c.loss)


@register_metric("mean_lmc_loss", "curve", "mean loss over the lambda grid (the paper's "
                 "heatmap value)", higher_is_better=False)
def curve_mean_lmc_loss(c: CurveSeries) -> float:
    return _mean_loss(c.loss)


@register_metric("threshold", "curve", "lambda*: largest lambda up to which accuracy stays "
                 "within epsilon of the base's", higher_is_better=True)
def curve_threshold(c: CurveSeries) -> float:
    return _threshold(c.lambdas, c.accuracy, c.epsilon)


@register_metric("target_task_accuracy", "curve", "accuracy on the target's own task at lambda* "
                 "(what the merge gains while keeping the base's skill)", higher_is_better=True)
def curve_target_task_accuracy(c: CurveSeries) -> float:
    """Target-task accuracy at the base-task threshold lambda*.

    Raises MalError when the curve was not measured on the target's task.
    """
    if c.target_accuracy is None:
        raise MalError("target_task_accuracy needs the curve measured on the target's dataset")
    if len(c.target_accuracy) != len(c.lambdas):
        raise MalError(f"target-task curve has {len(c.target_accuracy)} points, "
                       f"the lambda grid {len(c.lambdas)}")
    lam = _threshold(c.lambdas, c.accuracy, c.epsilon)
    return float(c.target_accuracy[list(c.lambdas).index(lam)])
