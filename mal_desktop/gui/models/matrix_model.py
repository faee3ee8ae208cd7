"""QtMatrixModel: a table model adapting the models x datasets evaluation matrix.

The core's :class:`~mal_desktop.core.toolkit.matrix.MatrixResult` is immutable and arrives at
the end of a run; while the run goes, its cells arrive one by one as progress payloads
(:class:`MatrixCell`). The model therefore holds the *layout* (rows = model references, columns
= dataset names) and a dict of the cells received so far; a missing cell shows as pending.

Column 0 is the model's display name (so rows can be sorted by name); columns 1.. are the
datasets. Cells show one scalar metric at a time (:meth:`QtMatrixModel.set_metric`), coloured on
a red-to-green scale blended into the palette's base colour so the text stays readable in light
and dark themes. Accuracy uses the absolute scale 0..1 (a glance tells "kept its skill" from
"chance"); other metrics use the range seen in the table, flipped when lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex,
                            QSortFilterProxyModel, Qt)
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from ...core.dataspec import spec_label
from ...core.evaluate.datasets import is_text_dataset
from ...core.toolkit.matrix import MatrixCell, MatrixResult
from ...core.evaluate.metric_registry import METRICS, SampleScores
from ..palette import plot_colors

VALUE_ROLE = Qt.ItemDataRole.UserRole + 1  # float value of the shown metric (None: missing)
CELL_ROLE = Qt.ItemDataRole.UserRole + 2  # the MatrixCell (None for column 0 or pending)
REF_ROLE = Qt.ItemDataRole.UserRole + 3  # the row's model reference text

COL_MODEL = 0
ABSOLUTE_RANGES = {"accuracy": (0.0, 1.0)}  # metrics with a meaningful fixed scale
LOG_SCALED = {"perplexity"}  # coloured by orders of magnitude
BLEND = 0.42  # share of the scale colour mixed into the palette base (rest: base)

Index = QModelIndex | QPersistentModelIndex


def metric_applies(metric: str, dataset: str) -> bool:
    """Whether ``metric`` means something on ``dataset`` (a text-only one on text only)."""
    known = METRICS.get(metric)
    return known is None or not known.text_only or is_text_dataset(dataset)


def format_value(metric: str, value: float | None) -> str:
    """Display text of a metric value: accuracy as a percentage, others with 4 decimals, or in
    powers of ten from 100,000 on (an image model's perplexity on data it never saw read
    "44579923588614.1562")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    if math.isinf(value):
        return "\u221e" if value > 0 else "-\u221e"
    if metric == "accuracy":
        return f"{value:.1%}"
    return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.3e}"


def _higher_is_better(metric: str) -> bool:
    known = METRICS.get(metric)  # an unregistered name only loses its colour direction
    return known is None or known.higher_is_better is not False


def scale_color(t: float, palette: QPalette | None = None,
                strength: float | None = None) -> QColor:
    """The cell colour for quality ``t`` in [0, 1] (0 worst, 1 best) in the current theme.

    Hue runs from the theme's "bad" colour through yellow to its "good" colour; the result is
    mixed with the palette's base colour (``strength``: share of the scale colour, default
    :data:`BLEND`) so the palette's text colour stays legible on it.
    """
    colors = plot_colors()
    if palette is None:
        app = QApplication.instance()
        palette = app.palette() if isinstance(app, QApplication) else QPalette()
    bad, good = QColor(colors.bad), QColor(colors.good)
    t = min(1.0, max(0.0, t))
    h_bad, h_good = max(0.0, bad.hueF()), max(0.0, good.hueF())
    hue = h_bad + (h_good - h_bad) * t
    sat = bad.saturationF() + (good.saturationF() - bad.saturationF()) * t
    pure = QColor.fromHsvF(hue, max(0.55, sat), 0.95)
    base = palette.color(QPalette.ColorRole.Base)
    k = strength if strength is not None else (BLEND if not colors.dark else BLEND + 0.1)
    return QColor.fromRgbF(k * pure.redF() + (1 - k) * base.redF(),
                           k * pure.greenF() + (1 - k) * base.greenF(),
                           k * pure.blueF() + (1 - k) * base.blueF())


# -- drill-down data: one cell's per-sample scores (MatrixCell.samples) -------------------------
def class_names(scores: SampleScores) -> list[str]:
    """Name of each class index: the category tag of its samples (the dataset's class name)."""
    names = [str(c) for c in range(scores.num_classes)]
    for c in range(scores.num_classes):
        tags = scores.categories[scores.labels == c]
        if len(tags):
            names[c] = str(tags[0])
    return names


def confusion_counts(scores: SampleScores) -> np.ndarray:
    """counts[true class, predicted class] (num_classes x num_classes, int64)."""
    out = np.zeros((scores.num_classes, scores.num_classes), dtype=np.int64)
    np.add.at(out, (scores.labels, scores.preds), 1)
    return out


def per_class_accuracy(scores: SampleScores) -> np.ndarray:
    """Accuracy of the samples of each true class (NaN for a class with no samples)."""
    out = np.full(scores.num_classes, np.nan)
    for c in range(scores.num_classes):
        mask = scores.labels == c
        if mask.any():
            out[c] = float(scores.correct[mask].mean())
    return out


def drawn_perplexity(loss: float) -> float:
    """exp of a mean loss for a bar or line to draw: capped at exp(700), where
    ``perplexity_of`` gives inf (a plot's range cannot end at inf)."""
    return math.exp(min(loss, 700.0))


def per_document(scores: SampleScores) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """For text scored per token: the documents (the tokens' category tags, in name order) and
    each one's token count, perplexity (:func:`drawn_perplexity` of its mean next-token loss)
    and next-token accuracy."""
    docs = sorted({str(t) for t in scores.categories})
    tags = scores.categories.astype(str)
    n, ppl, acc = (np.zeros(len(docs)) for _ in range(3))
    for i, doc in enumerate(docs):
        mask = tags == doc
        n[i] = mask.sum()
        ppl[i] = drawn_perplexity(float(scores.loss[mask].mean()))
        acc[i] = float(scores.correct[mask].mean())
    return docs, n, ppl, acc


class QtMatrixModel(QAbstractTableModel):
    """Rows = models, column 0 = model name, columns 1.. = datasets; read-only.

    Fill it with :meth:`set_layout` then :meth:`set_cell` (live), or :meth:`set_result`.
    Custom roles: VALUE_ROLE (float of the shown metric, None when missing), CELL_ROLE (the
    MatrixCell), REF_ROLE (the row's model reference).
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[str, str]] = []  # (reference text, display name)
        self._cols: list[str] = []
        self._cells: dict[tuple[str, str], MatrixCell] = {}
        self._stopped = False  # pending cells will not come (run cancelled or failed)
        self._metric = "accuracy"
        # the colour scale of each data set's column: models are compared on one data set
        # (a loss of 13 read green beside a 55 on another set); dataset -> (low, high)
        self._range: dict[str, tuple[float, float]] = {}
        self._colors: dict[tuple[int, int], QColor] = {}
        self._stale: dict[str, str] = {}  # row reference -> why its cells no longer apply
        self.result: MatrixResult | None = None

    # -- filling ------------------------------------------------------------------------------
    def set_layout(self, rows: Sequence[tuple[str, str]], datasets: Sequence[str]) -> None:
        """Start a new matrix: ``rows`` (reference, display name) x ``datasets``, all pending.

        Cells of an earlier matrix with the same row and column are kept (they were cached and
        would come back identical) until the new run sends them again.
        """
        self.beginResetModel()
        seen: set[str] = set()
        self._rows = []
        for ref, name in rows:
            if ref not in seen:  # the core evaluates a reference once
                seen.add(ref)
                self._rows.append((ref, name))
        self._cols = list(dict.fromkeys(datasets))
        self._cells = {k: c for k, c in self._cells.items()
                       if k[0] in seen and k[1] in self._cols}
        self._stopped = False
        self._stale = {}
        self.result = None
        self._update_range()
        self.endResetModel()

    def set_cell(self, cell: MatrixCell) -> None:
        """One finished cell (a progress payload). Cells outside the layout are ignored."""
        key = (cell.model, cell.dataset)
        try:
            row = [r for r, _ in self._rows].index(cell.model)
            col = self._cols.index(cell.dataset) + 1
        except ValueError:
            return
        self._cells[key] = cell
        old = self._range
        self._update_range()
        if old != self._range:
            self._all_changed()  # a new extreme recolours every cell
        else:
            self._colors.pop((row, col), None)
            index = self.index(row, col)
            self.dataChanged.emit(index, index)

    def set_result(self, result: MatrixResult, names: Mapping[str, str] | None = None) -> None:
        """Show a finished matrix; ``names`` maps reference text -> display name."""
        names = names or {}
        self.beginResetModel()
        self.result = result
        self._rows = [(m["ref"], names.get(m["ref"], m["name"])) for m in result.models]
        self._cols = [d["name"] for d in result.datasets]
        self._cells = {(c.model, c.dataset): c for c in result.cells}
        self._stopped = False
        self._stale = {}
        if self._metric not in self.metrics() and self.metrics():
            self._metric = self.metrics()[0]
        self._update_range()
        self.endResetModel()

    def clear(self) -> None:
        """No rows, no columns, no result (a new session)."""
        self.beginResetModel()
        self._rows, self._cols, self._cells = [], [], {}
        self._stopped = False
        self._stale = {}
        self.result = None
        self._update_range()
        self.endResetModel()

    def mark_stale(self, ref: str, reason: str) -> None:
        """The cells of row ``ref`` no longer describe that model (e.g. the plan behind the
        merged model was edited): they are greyed, and their tooltips say ``reason``."""
        rows = [i for i, (r, _) in enumerate(self._rows) if r == ref]
        if not rows or self._stale.get(ref) == reason:
            return
        self._stale[ref] = reason
        self.dataChanged.emit(self.index(rows[0], 0), self.index(rows[0], len(self._cols)))

    def refs(self) -> list[str]:
        """The rows' model references, in order."""
        return [ref for ref, _ in self._rows]

    def stale_reason(self, row: int) -> str:
        """Why row ``row``'s cells are stale ("" when they are not)."""
        return self._stale.get(self._rows[row][0], "") if 0 <= row < len(self._rows) else ""

    def mark_stopped(self) -> None:
        """The run ended without a result: pending cells now read "not computed"."""
        self._stopped = True
        self._all_changed()

    def set_metric(self, metric: str) -> None:
        """Show (and colour by) scalar metric ``metric``."""
        if metric == self._metric:
            return
        self._metric = metric
        self._update_range()
        self._all_changed()

    def refresh_colors(self) -> None:
        """Recompute cell colours (after a palette change)."""
        self._all_changed()

    # -- queries ------------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        return self._metric

    def metrics(self) -> list[str]:
        """Scalar metrics the cells hold (per-category ones are left out), in result order."""
        names: list[str] = list(self.result.metrics) if self.result is not None else []
        for cell in self._cells.values():
            names += [m for m in cell.metrics if m not in names]
        # A name this registry does not know (a cache written by a newer version) is not offered;
        # nor a text-only one (perplexity) when no column holds text.
        return [n for n in names if n in METRICS and not METRICS[n].per_category
                and any(metric_applies(n, d) for d in self._cols)]

    def cell(self, row: int, col: int) -> MatrixCell | None:
        """The finished cell at (row, col) of this model, or None (pending / column 0)."""
        if not (0 <= row < len(self._rows)) or not (1 <= col <= len(self._cols)):
            return None
        return self._cells.get((self._rows[row][0], self._cols[col - 1]))

    def row_name(self, row: int) -> str:
        return self._rows[row][1]

    def dataset(self, col: int) -> str:
        return self._cols[col - 1]

    def finished_cells(self) -> list[MatrixCell]:
        return list(self._cells.values())

    def value(self, cell: MatrixCell | None) -> float | None:
        """The shown metric of ``cell`` as a float (None when missing, failed or non-numeric,
        or a text-only metric of other data: a classifier's "perplexity")."""
        if cell is None or cell.error or not metric_applies(self._metric, cell.dataset):
            return None
        v = cell.metrics.get(self._metric)
        return float(v) if isinstance(v, (int, float)) else None

    # -- Qt model interface -------------------------------------------------------------------
    def rowCount(self, parent: Index | None = None) -> int:  # noqa: N802 - Qt's name
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index | None = None) -> int:  # noqa: N802 - Qt's name
        if parent is not None and parent.isValid():
            return 0
        return 1 + len(self._cols) if self._rows or self._cols else 0

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt's name
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Vertical:
            return section + 1 if role == Qt.ItemDataRole.DisplayRole else None
        if not 0 <= section < self.columnCount():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            # a file's own name, not its whole path (the tooltip has the path)
            return "Model" if section == COL_MODEL else spec_label(self._cols[section - 1])
        if role == Qt.ItemDataRole.ToolTipRole:
            if section == COL_MODEL:
                return "Evaluated model (click to sort by name)"
            name = self._cols[section - 1]
            tip = f"{name}: test split (click to sort the models by {self._metric})"
            if self.result is not None:
                prints = {d["name"]: d["fingerprint"] for d in self.result.datasets}
                if name in prints:
                    tip += f"\nfingerprint {prints[name][:16]}"
            return tip
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not self.checkIndex(index):
            return None
        row, col = index.row(), index.column()
        ref, name = self._rows[row]
        if role == REF_ROLE:
            return ref
        stale = self._stale.get(ref, "")
        if stale and role == Qt.ItemDataRole.ForegroundRole:
            return QApplication.palette().color(QPalette.ColorRole.PlaceholderText)
        if col == COL_MODEL:
            if role == Qt.ItemDataRole.DisplayRole:
                return f"\u26a0 {name} (stale)" if stale else name
            if role == VALUE_ROLE:
                return name
            if role == Qt.ItemDataRole.ToolTipRole:
                return self._row_tip(row) + (f"\nStale: {stale}" if stale else "")
            return None
        cell = self.cell(row, col)
        if role == CELL_ROLE:
            return cell
        if role == VALUE_ROLE:
            return self.value(cell)
        if role == Qt.ItemDataRole.DisplayRole:
            if cell is None:
                return "not computed" if self._stopped else "\u2026"
            if cell.mismatch:
                return "n/a"  # the model reads other data: nothing failed
            if cell.error:
                return "error"
            return format_value(self._metric, self.value(cell))
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.BackgroundRole:
            # stale: muted text on the view's own background (muted grey on the scale's
            # colours was unreadable in the dark theme, and the colour compared old numbers)
            return None if stale else self._background(row, col, cell)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._cell_tip(row, col, cell) + (f"\nStale: {stale}; Evaluate again"
                                                     if stale else "")
        return None

    # -- internals ----------------------------------------------------------------------------
    def _all_changed(self) -> None:
        self._colors.clear()
        if self._rows and self._cols:
            self.dataChanged.emit(self.index(0, 0),
                                  self.index(len(self._rows) - 1, len(self._cols)))

    def _update_range(self) -> None:
        """Each column's colour scale: a metric's fixed one (accuracy: 0-100 %), else the
        column's own extremes (on a log scale for perplexity, which spans 1 to 1e23)."""
        self._colors.clear()
        fixed = ABSOLUTE_RANGES.get(self._metric)
        self._range = {}
        for dataset in self._cols:
            if fixed is not None:
                self._range[dataset] = fixed
                continue
            values = [self._scaled(v) for key, c in self._cells.items() if key[1] == dataset
                      for v in [self.value(c)] if v is not None and math.isfinite(v)]
            self._range[dataset] = (min(values), max(values)) if values else (0.0, 1.0)

    def _scaled(self, value: float) -> float:
        """``value`` where the colour scale is linear: log10 of a perplexity."""
        if self._metric in LOG_SCALED and math.isfinite(value) and value > 0:
            return math.log10(value)
        return value

    def _quality(self, value: float, dataset: str) -> float:
        lo, hi = self._range.get(dataset, (0.0, 1.0))
        value = self._scaled(value)
        if math.isfinite(value) and hi - lo <= 1e-12:
            return 1.0  # one value (or all equal): nothing to contrast, show it as the best
        if not math.isfinite(value):
            t = 1.0 if value > 0 else 0.0  # +inf loss is the worst; flipped below
        else:
            t = (value - lo) / (hi - lo)
        return t if _higher_is_better(self._metric) else 1.0 - t

    def _background(self, row: int, col: int, cell: MatrixCell | None) -> QColor | None:
        value = self.value(cell)
        if value is None or math.isnan(value):
            return None  # pending, failed or missing: the view's own background
        key = (row, col)
        color = self._colors.get(key)
        if color is None:
            color = self._colors[key] = scale_color(self._quality(value, cell.dataset))
        return color

    def _row_tip(self, row: int) -> str:
        ref, name = self._rows[row]
        lines = [name, ref]
        if self.result is not None:
            info = next((m for m in self.result.models if m["ref"] == ref), None)
            if info is not None:
                lines.append(f"{info['kind']} model, content hash {info['hash'][:16]}")
        return "\n".join(lines)

    def _cell_tip(self, row: int, col: int, cell: MatrixCell | None) -> str:
        where = f"{self._rows[row][1]} on {self._cols[col - 1]}"
        if cell is None:
            return f"{where}: {'not computed (run stopped)' if self._stopped else 'pending'}"
        if cell.mismatch:
            return f"{where}: not applicable: {cell.error}"
        if cell.error:
            return f"{where}: {cell.error}"
        parts = [f"{m} {format_value(m, v)}" for m, v in cell.metrics.items()
                 if isinstance(v, (int, float))]
        source = "from the result cache" if cell.cached else "computed in this run"
        return f"{where} ({cell.n} samples, {source})\n" + ", ".join(parts) + \
            "\nSelect the cell for per-class accuracy and the confusion matrix"


class MatrixSortProxy(QSortFilterProxyModel):
    """Sorts rows by VALUE_ROLE; missing values (pending, errors, NaN) sort below any number."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSortRole(VALUE_ROLE)

    def lessThan(self, left: Index, right: Index) -> bool:  # noqa: N802 - Qt's name
        a = self.sourceModel().data(left, VALUE_ROLE)
        b = self.sourceModel().data(right, VALUE_ROLE)
        if isinstance(a, str) or isinstance(b, str):
            return str(a).lower() < str(b).lower()
        a_missing = a is None or (isinstance(a, float) and math.isnan(a))
        b_missing = b is None or (isinstance(b, float) and math.isnan(b))
        if a_missing or b_missing:
            return a_missing and not b_missing
        return float(a) < float(b)


__all__ = ["CELL_ROLE", "REF_ROLE", "VALUE_ROLE", "MatrixSortProxy", "QtMatrixModel",
           "class_names", "confusion_counts", "format_value", "per_class_accuracy",
           "scale_color"]
