"""The numbers behind a curve plot: point buffers, the barrier's relevance, accuracy at lambda."""

from __future__ import annotations

import html
import math
import re
from typing import Sequence

import numpy as np

from ...core.evaluate.metrics import CurveMetrics, perplexity_of


class Buffers:
    """Growable NaN-filled arrays of one series: lambda, loss, accuracy by grid index."""

    def __init__(self, capacity: int = 32) -> None:
        self.lam = np.full(capacity, np.nan)
        self.loss = np.full(capacity, np.nan)
        self.acc = np.full(capacity, np.nan)
        self.n = 0  # 1 + the highest index written

    def put(self, index: int, lam: float, loss: float, acc: float) -> None:
        if index >= self.lam.size:
            size = max(index + 1, 2 * self.lam.size)
            for name in ("lam", "loss", "acc"):
                old = getattr(self, name)
                new = np.full(size, np.nan)
                new[: old.size] = old
                setattr(self, name, new)
        self.lam[index], self.loss[index], self.acc[index] = lam, loss, acc
        self.n = max(self.n, index + 1)

    def clear(self) -> None:
        for arr in (self.lam, self.loss, self.acc):
            arr.fill(np.nan)
        self.n = 0


def finite_or_nan(values: np.ndarray) -> np.ndarray:
    """``values`` with inf and -inf as NaN."""
    # pyqtgraph can draw gaps at NaN ("finite" connect) but inf breaks auto-ranging.
    return np.where(np.isfinite(values), values, np.nan)


def fmt(value: float, digits: int = 3) -> str:
    """A fixed-point number; "\u221e" for +inf, "n/a" for NaN and -inf."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "\u221e" if value > 0 else "n/a"


def barrier_informative(lambdas: Sequence[float], m: CurveMetrics) -> bool:
    """Does the chord barrier of ``m`` say something (the loss rises above the chord)?"""
    loss = np.asarray(m.loss, dtype=float)
    finite = loss[np.isfinite(loss)]
    if len(lambdas) < 3 or finite.size < 3 or not math.isfinite(m.barrier):
        return False
    span = float(finite.max() - finite.min())
    return m.barrier > max(1e-3, 0.02 * span)


def _value_at(lambdas: Sequence[float], values: Sequence[float], lam: float) -> float:
    """``values`` at ``lam``, linear between grid points (NaN outside the grid)."""
    x = np.asarray(lambdas, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 1 or not math.isfinite(lam) or not x[ok].min() <= lam <= x[ok].max():
        return math.nan
    return float(np.interp(lam, x[ok], y[ok]))


def accuracy_at(lambdas: Sequence[float], m: CurveMetrics, lam: float) -> float:
    """The accuracy of series ``m`` at ``lam`` (linear between grid points; NaN outside)."""
    return _value_at(lambdas, m.accuracy, lam)


def perplexity_at(lambdas: Sequence[float], m: CurveMetrics, lam: float) -> float:
    """exp of the loss of series ``m`` at ``lam`` (the loss linear between grid points; NaN
    outside the grid, inf past exp's range)."""
    return perplexity_of(_value_at(lambdas, m.loss, lam))


def plain(rich: str) -> str:
    """Rich label text as plain text (tags dropped, entities decoded)."""
    text = re.sub(r"<br\s*/?>", "\n", rich)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\xa0", " ")
