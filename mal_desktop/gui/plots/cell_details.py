"""CellDetails: the drill-down into one cell of the evaluation matrix.

Two plots side by side, from the cell's per-sample scores (:meth:`MatrixCell.samples`, the
``.npz`` the core's result cache keeps): the accuracy of each true class as bars (a dashed line at
the overall accuracy) and the confusion matrix (true x predicted class), coloured by each true
class's share so classes of different sizes compare, with the counts printed while the matrix is
small enough to read them. Plot items are created once; a theme change redraws in its colours.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, QSize, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...core.errors import MalError
from ...core.toolkit.matrix import MatrixCell
from ...core.evaluate.metric_registry import SampleScores
from ..models.matrix_model import (class_names, confusion_counts, format_value,
                                   per_class_accuracy, scale_color)
from ..palette import plot_colors
from .plot_grid import PlotGrid
from .style import color_axes, show_tick_values

MAX_LABELLED_CELLS = 12  # confusion matrices up to this many classes show their counts


class CellDetails(QWidget):
    """Per-class accuracy bars and the confusion matrix of one matrix cell."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel("Select a cell of the matrix for per-class accuracy and the "
                             "confusion matrix.")
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.grid = PlotGrid(columns=2, min_plot=QSize(220, 170))
        g = self.graphics = self.grid.graphics
        g.setToolTip("Left: accuracy of each true class (dashed line: overall accuracy).\n"
                     "Right: counts of true x predicted class; the colour is the share of the "
                     "true class's samples, so classes of different sizes compare.")
        self.bar_plot: pg.PlotItem = self.grid.add_plot("per-class accuracy")
        self.conf_plot: pg.PlotItem = self.grid.add_plot("confusion matrix")
        for plot in (self.bar_plot, self.conf_plot):
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # classes: never "x0.001"
        bp = self.bar_plot
        bp.setLabel("bottom", "true class")
        bp.setLabel("left", "accuracy")
        bp.setYRange(0, 1.05, padding=0)
        bp.setMouseEnabled(x=False, y=False)
        bp.showGrid(y=True, alpha=0.15)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.75)
        bp.addItem(self.bars)
        self.mean_line = pg.InfiniteLine(angle=0, movable=False)
        self.mean_line.hide()
        bp.addItem(self.mean_line)
        cp = self.conf_plot
        cp.setLabel("bottom", "predicted class")
        cp.setLabel("left", "true class")
        cp.invertY(True)  # row 0 on top, like a matrix
        cp.setAspectLocked(True)  # square cells
        cp.setMouseEnabled(x=False, y=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        cp.addItem(self.image)
        self.count_labels: list[pg.TextItem] = []
        self.scores: SampleScores | None = None
        self.counts: np.ndarray | None = None
        self.accuracy: np.ndarray | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.header)
        layout.addWidget(self.grid, 1)
        self._apply_colors()
        self.clear()

    def _apply_colors(self) -> None:
        c = plot_colors()
        self.grid.set_background(c.background)
        color_axes((self.bar_plot, self.conf_plot), c)
        self.mean_line.setPen(pg.mkPen(c.accent, width=1.5, style=Qt.PenStyle.DashLine))
        # Confusion colours: palette base (no samples) to the series colour (all samples).
        cmap = pg.ColorMap([0.0, 1.0], [QColor(c.background), QColor(c.aligned)])
        self.image.setLookupTable(cmap.getLookupTable(nPts=256))
        if self.scores is not None:
            self._draw()

    def clear(self, note: str = "") -> None:
        """Empty plots, with an optional note in the header."""
        self.scores = self.counts = self.accuracy = None
        self.bars.setOpts(x=[], height=[])
        self.mean_line.hide()
        self.image.clear()
        self._remove_counts()
        self.bar_plot.setTitle("per-class accuracy")
        self.conf_plot.setTitle("confusion matrix")
        for plot in (self.bar_plot, self.conf_plot):
            show_tick_values(plot, False)  # nothing to label: no stacked tick labels
        if note:
            self.header.setText(note)

    def _remove_counts(self) -> None:
        for label in self.count_labels:
            self.conf_plot.removeItem(label)
        self.count_labels = []

    def show_cell(self, cell: MatrixCell | None, row_name: str) -> None:
        """Draw the drill-down of ``cell`` (None: clear). A cell whose per-sample scores
        cannot be read shows why instead."""
        if cell is None:
            self.clear("Select a finished cell of the matrix.")
            return
        where = f"<b>{html.escape(row_name)}</b> on <b>{html.escape(cell.dataset)}</b>"
        if cell.error:
            self.clear(f"{where}: <span style='color:{plot_colors().bad}'>"
                       f"{html.escape(cell.error)}</span>")
            return
        try:
            scores = cell.samples()
        except MalError as exc:
            self.clear(f"{where}: the per-sample scores cannot be read ({html.escape(str(exc))});"
                       " evaluate again to recompute them.")
            return
        self.clear()
        for plot in (self.bar_plot, self.conf_plot):
            show_tick_values(plot, True)
        self.scores = scores
        self.counts = confusion_counts(scores)
        self.accuracy = per_class_accuracy(scores)
        parts = [f"{m} {format_value(m, float(v))}" for m, v in cell.metrics.items()
                 if isinstance(v, (int, float))]
        source = "from the cache" if cell.cached else "computed now"
        dot = " \u00b7 "
        self.header.setText(f"{where}: {dot.join(parts)}{dot}{cell.n} samples ({source})")
        self._draw()

    def _draw(self) -> None:
        scores, counts, acc = self.scores, self.counts, self.accuracy
        assert scores is not None and counts is not None and acc is not None
        c = plot_colors()
        n = scores.num_classes
        names = class_names(scores)
        ticks = [[(i, names[i]) for i in range(n)]]
        x = np.arange(n, dtype=float)
        shown = np.nan_to_num(acc, nan=0.0)
        brushes = [pg.mkBrush(scale_color(a, strength=0.85)) if math.isfinite(a)
                   else pg.mkBrush(c.muted) for a in acc]
        self.bars.setOpts(x=x, height=shown, width=0.75, brushes=brushes,
                          pen=pg.mkPen(c.muted, width=0.5))
        overall = float(scores.correct.mean()) if len(scores) else math.nan
        if math.isfinite(overall):
            self.mean_line.setValue(overall)
            self.mean_line.show()
        self.bar_plot.getAxis("bottom").setTicks(ticks)
        self.bar_plot.setXRange(-0.6, n - 0.4, padding=0)
        # Short titles: a plot title's text width is a minimum width of the whole layout.
        self.bar_plot.setTitle("per-class accuracy", color=c.foreground)
        # Rows normalised: each true class's share per predicted class, so classes of
        # different sizes read alike; the counts are printed in the cells.
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        self.image.setImage(share, levels=(0.0, 1.0))
        self.image.setRect(QRectF(-0.5, -0.5, n, n))
        for side in ("bottom", "left"):
            self.conf_plot.getAxis(side).setTicks(ticks)
        self.conf_plot.setRange(xRange=(-0.5, n - 0.5), yRange=(-0.5, n - 0.5), padding=0)
        self.conf_plot.setTitle("confusion matrix", color=c.foreground)
        self._remove_counts()  # a redraw (theme change) replaces them
        if n <= MAX_LABELLED_CELLS:
            for t in range(n):
                for p in range(n):
                    if counts[t, p]:
                        label = pg.TextItem(str(int(counts[t, p])), anchor=(0.5, 0.5),
                                            color=c.background if share[t, p] > 0.6
                                            else c.foreground)
                        label.setPos(p, t)
                        self.conf_plot.addItem(label, ignoreBounds=True)
                        self.count_labels.append(label)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_colors()
        super().changeEvent(event)


__all__ = ["CellDetails", "MAX_LABELLED_CELLS"]
