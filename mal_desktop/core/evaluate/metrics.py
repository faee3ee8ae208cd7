"""The MAL metrics of an interpolation curve (mal_method.md section 7)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence


def barrier(lambdas: Sequence[float], losses: Sequence[float]) -> float:
    """max over lambda of L(lambda) - ((1 - lambda) L(0) + lambda L(1)).

    ``lambdas`` must start at 0 and end at 1. Non-finite losses make the barrier inf.
    """
    l0, l1 = losses[0], losses[-1]
    worst = -math.inf
    for lam, loss in zip(lambdas, losses):
        if not math.isfinite(loss):
            return math.inf
        worst = max(worst, loss - ((1.0 - lam) * l0 + lam * l1))
    return worst


def mean_loss(losses: Sequence[float]) -> float:
    """Mean LMC loss over the grid (the paper's heatmap value; lower is better)."""
    return sum(losses) / len(losses)


def threshold_lambda(lambdas: Sequence[float], accuracies: Sequence[float],
                     epsilon: float = 0.01) -> float:
    """Largest lambda up to which accuracy stays within ``epsilon`` of the base's (lambda 0).

    Accuracies are fractions; epsilon 0.01 is one point. Scans from lambda 0 and stops at the
    first grid point that falls below; returns the last lambda that was still within.
    """
    base = accuracies[0]
    last = lambdas[0]
    for lam, acc in zip(lambdas, accuracies):
        if not (acc >= base - epsilon):  # also catches NaN
            break
        last = lam
    return last


def lambda_grid(n: int) -> list[float]:
    """``n`` evenly spaced points from 0 to 1 inclusive (n >= 2); 21 gives 0, 0.05, ..., 1."""
    if n < 2:
        raise ValueError("a lambda grid needs at least 2 points")
    return [i / (n - 1) for i in range(n)]


def perplexity_of(loss: float) -> float:
    """exp of a mean per-token cross-entropy: NaN stays NaN, and a loss past exp's range
    (about 709) gives inf."""
    if math.isnan(loss):
        return math.nan
    return math.exp(loss) if loss < 700 else math.inf


@dataclass(frozen=True)
class CurvePoint:
    """One point of a curve, sent as a progress payload. series: "naive" | "aligned"."""

    series: str
    index: int
    lam: float
    loss: float
    accuracy: float


@dataclass(frozen=True)
class CurveMetrics:
    """One interpolation curve and its metrics."""

    loss: tuple[float, ...]
    accuracy: tuple[float, ...]
    barrier: float
    mean_loss: float
    threshold: float

    @staticmethod
    def from_points(lambdas: Sequence[float], loss: Sequence[float], accuracy: Sequence[float],
                    epsilon: float = 0.01) -> "CurveMetrics":
        return CurveMetrics(tuple(loss), tuple(accuracy), barrier(lambdas, loss),
                            mean_loss(loss), threshold_lambda(lambdas, accuracy, epsilon))

    def to_json(self) -> dict[str, Any]:
        return {"loss": list(self.loss), "accuracy": list(self.accuracy), "barrier": self.barrier,
                "mean_loss": self.mean_loss, "threshold": self.threshold}


@dataclass(frozen=True)
class CurveResult:
    """Naive vs aligned interpolation curves over ``lambdas``."""

    lambdas: tuple[float, ...]
    naive: CurveMetrics
    aligned: CurveMetrics
    dataset: str = ""
    repair: bool = False  # BatchNorm statistics re-estimated (an addition to MAL)
    # scored per next token (a text dataset): the loss is the log of the perplexity
    per_token: bool = False
    # how the aligned series was aligned, as JSON-able data (see jobs.curve_series): the
    # alignment that ran and was asked for, fallbacks and why, the fixed spaces and their reasons
    alignment: Any = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"lambdas": list(self.lambdas), "naive": self.naive.to_json(),
                "aligned": self.aligned.to_json(), "data": self.dataset, "repair": self.repair,
                "per_token": self.per_token, "alignment": self.alignment or {}}
