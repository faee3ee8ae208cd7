"""CurvePlot: loss and accuracy vs lambda, naive vs aligned, filling in point by point.

Plot items are created once; points land in preallocated NaN-filled buffers and a throttled
timer pushes them with ``setData`` (the worker may report faster than it is useful to redraw).
Non-finite values are kept in the buffers (and in the CSV) but drawn as gaps. After
``set_result`` the barrier (the chord from L(0) to L(1) and the gap at its worst point) and the
threshold lambda* are marked. The current step's lambda is a draggable vertical line; releasing
it emits ``lambdaDragged(float)``, which the panel turns into one undo command.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...core.evaluate.metrics import CurvePoint, CurveResult
from ..palette import plot_colors
from .export import ExportButton, ExportEntry, export_csv, export_png
from .style import color_axes

SERIES = ("naive", "aligned")
_REFRESH_MS = 50  # at most ~20 redraws a second however fast points arrive


class _Buffers:
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


def _finite_or_nan(values: np.ndarray) -> np.ndarray:
    # pyqtgraph can draw gaps at NaN ("finite" connect) but inf breaks auto-ranging.
    return np.where(np.isfinite(values), values, np.nan)


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "\u221e" if value > 0 else "n/a"


class CurvePlot(QWidget):
    """Two plots side by side (loss, accuracy in %) vs lambda, each with naive and aligned series.

    Signals: ``lambdaDragged(float)`` when the user releases the lambda line.
    """

    lambdaDragged = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._buf = {s: _Buffers() for s in SERIES}
        self._result: CurveResult | None = None
        self._colors = plot_colors()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._syncing = False
        self._build()
        self._apply_colors()
        self.clear()

    # -- construction (once) -----------------------------------------------------------------
    def _build(self) -> None:
        self._title = QLabel("Interpolation curve: Run evaluates the selected step")
        self._title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._legend = QLabel("")
        self._legend.setTextFormat(Qt.TextFormat.RichText)
        self._export = ExportButton(self._export_entries, self)

        self.graphics = pg.GraphicsLayoutWidget()
        # The summary lives inside the graphics scene so PNG exports carry it.
        self._summary: pg.LabelItem = self.graphics.addLabel("", row=0, col=0, colspan=2,
                                                             justify="left", size="9pt")
        self.loss_plot: pg.PlotItem = self.graphics.addPlot(row=1, col=0)
        self.acc_plot: pg.PlotItem = self.graphics.addPlot(row=1, col=1)
        self.acc_plot.setXLink(self.loss_plot)
        for plot, label in ((self.loss_plot, "loss"), (self.acc_plot, "accuracy (%)")):
            plot.setLabel("bottom", "\u03bb (merging factor)")
            plot.setLabel("left", label)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setXRange(0.0, 1.0, padding=0.02)
            plot.setMouseEnabled(x=False, y=True)
            plot.getViewBox().setLimits(xMin=-0.05, xMax=1.05)
        self.acc_plot.setYRange(0, 100, padding=0.02)

        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        for series in SERIES:
            for plot, metric in ((self.loss_plot, "loss"), (self.acc_plot, "accuracy")):
                item = plot.plot([], [], connect="finite", symbol="o", symbolSize=6)
                self.curves[(series, metric)] = item

        # Barrier: the chord (1 - lam) L(0) + lam L(1) and the vertical gap at its worst point.
        self.chords = {s: self.loss_plot.plot([], [], connect="finite") for s in SERIES}
        self.barrier_bars = {s: self.loss_plot.plot([], []) for s in SERIES}
        self.barrier_texts = {s: pg.TextItem(anchor=(0, 0.5)) for s in SERIES}
        for item in self.barrier_texts.values():
            self.loss_plot.addItem(item, ignoreBounds=True)

        # lambda*: one marker per series on both plots (non-movable, labelled on the acc plot).
        self.threshold_lines: dict[tuple[str, str], pg.InfiniteLine] = {}
        for series in SERIES:
            for plot, where in ((self.loss_plot, "loss"), (self.acc_plot, "accuracy")):
                labelled = where == "accuracy"
                line = pg.InfiniteLine(
                    angle=90, movable=False, label=f"\u03bb* {series}" if labelled else None,
                    labelOpts={"position": 0.12 if series == "aligned" else 0.22,
                               "anchors": [(0, 0.5), (0, 0.5)]})
                if not labelled:
                    line.label = None
                plot.addItem(line, ignoreBounds=True)
                self.threshold_lines[(series, where)] = line

        # The current step's lambda: draggable, mirrored on both plots.
        self.lambda_lines: list[pg.InfiniteLine] = []
        for plot in (self.loss_plot, self.acc_plot):
            line = pg.InfiniteLine(pos=0.5, angle=90, movable=True, bounds=(0.0, 1.0),
                                   label="\u03bb={value:.2f}",
                                   labelOpts={"position": 0.06, "movable": False})
            line.setToolTip("Drag to change the selected step's \u03bb (undoable)")
            line.setZValue(20)
            line.sigPositionChanged.connect(self._on_line_moved)
            line.sigPositionChangeFinished.connect(self._on_line_released)
            plot.addItem(line, ignoreBounds=True)
            self.lambda_lines.append(line)

        top = QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 0)
        top.addWidget(self._title, 1)
        top.addWidget(self._legend)
        top.addWidget(self._export)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)

    def _apply_colors(self) -> None:
        c = self._colors
        self.graphics.setBackground(c.background)
        color_axes((self.loss_plot, self.acc_plot), c)
        for series in SERIES:
            color = c.naive if series == "naive" else c.aligned
            style = Qt.PenStyle.DashLine if series == "naive" else Qt.PenStyle.SolidLine
            for metric in ("loss", "accuracy"):
                item = self.curves[(series, metric)]
                item.setPen(pg.mkPen(color, width=2, style=style))
                item.setSymbolBrush(pg.mkBrush(color))
                item.setSymbolPen(pg.mkPen(color))
                item.setSymbol("t" if series == "naive" else "o")
            self.chords[series].setPen(pg.mkPen(color, width=1, style=Qt.PenStyle.DotLine))
            self.barrier_bars[series].setPen(pg.mkPen(color, width=3))
            for where in ("loss", "accuracy"):
                line = self.threshold_lines[(series, where)]
                line.setPen(pg.mkPen(color, width=1, style=Qt.PenStyle.DashDotLine))
                if line.label is not None:
                    line.label.setColor(color)
        for series, item in self.barrier_texts.items():
            item.setColor(c.naive if series == "naive" else c.aligned)
        self._summary.setAttr("color", c.foreground)
        self._legend.setText(
            f"<span style='color:{c.naive}'>\u2505\u25bc naive</span>&nbsp;&nbsp;"
            f"<span style='color:{c.aligned}'>\u2501\u25cf aligned</span>&nbsp;&nbsp;"
            f"<span style='color:{c.accent}'>\u2503 \u03bb (drag)</span>")
        if self._result is not None:
            self._draw_markers(self._result)
        for line in self.lambda_lines:
            line.setPen(pg.mkPen(c.accent, width=2))
            line.setHoverPen(pg.mkPen(c.accent, width=4))
            line.label.setColor(c.accent)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._colors = plot_colors()
            self._apply_colors()
        super().changeEvent(event)

    # -- data in ---------------------------------------------------------------------------
    @Slot(object)
    def add_point(self, point: CurvePoint) -> None:
        """Record one curve point (any order, NaN/inf allowed); the plot redraws shortly."""
        if point.series not in self._buf:
            raise ValueError(f"unknown curve series {point.series!r} (expected naive or aligned)")
        self._buf[point.series].put(int(point.index), float(point.lam), float(point.loss),
                                    float(point.accuracy))
        if not self._timer.isActive():
            self._timer.start()

    def set_result(self, result: CurveResult) -> None:
        """Show a finished curve: all points, the barriers and lambda* of both series."""
        self._result = result
        for series in SERIES:
            metrics = getattr(result, series)
            buf = self._buf[series]
            buf.clear()
            for i, (lam, loss, acc) in enumerate(zip(result.lambdas, metrics.loss,
                                                     metrics.accuracy)):
                buf.put(i, lam, loss, acc)
        self.refresh()
        self._draw_markers(result)

    def clear(self) -> None:
        """Forget all points and markers (a new curve is about to start)."""
        self._result = None
        for buf in self._buf.values():
            buf.clear()
        for series in SERIES:
            self.chords[series].setData([], [])
            self.barrier_bars[series].setData([], [])
        for line in self.threshold_lines.values():
            line.hide()
        for item in self.barrier_texts.values():
            item.setText("")
        self._summary.setText("Barrier and \u03bb* appear when the curve is complete.",
                              color=self._colors.muted)
        self.refresh()

    def set_title(self, text: str) -> None:
        """The line above the plots (e.g. which step and dataset the curve is for)."""
        self._title.setText(text)

    @Slot()
    def refresh(self) -> None:
        """Push the buffers to the plot items now (normally done by the throttle timer)."""
        self._timer.stop()
        for series, buf in self._buf.items():
            n = buf.n
            lam = buf.lam[:n]
            self.curves[(series, "loss")].setData(lam, _finite_or_nan(buf.loss[:n]),
                                                  connect="finite")
            self.curves[(series, "accuracy")].setData(lam, _finite_or_nan(buf.acc[:n] * 100.0),
                                                      connect="finite")

    def series_data(self, series: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(lambda, values) as drawn by the curve of ``series`` and ``metric`` (copies)."""
        x, y = self.curves[(series, metric)].getOriginalDataset()
        return (np.array([]) if x is None else np.array(x)), \
            (np.array([]) if y is None else np.array(y))

    # -- markers ---------------------------------------------------------------------------
    def _draw_markers(self, result: CurveResult) -> None:
        lams = np.asarray(result.lambdas, dtype=float)
        lines = []
        for series in SERIES:
            m = getattr(result, series)
            loss = np.asarray(m.loss, dtype=float)
            if lams.size >= 2 and np.isfinite(loss[[0, -1]]).all():
                chord = (1.0 - lams) * loss[0] + lams * loss[-1]
                self.chords[series].setData(lams, chord)
                gap = np.where(np.isfinite(loss), loss - chord, -np.inf)
                k = int(np.argmax(gap))
                text = self.barrier_texts[series]
                if math.isfinite(m.barrier) and gap[k] > 0:
                    self.barrier_bars[series].setData([lams[k], lams[k]], [chord[k], loss[k]])
                    text.setText(f"barrier {m.barrier:.3f}")
                    text.setPos(lams[k] + 0.01, 0.5 * (chord[k] + loss[k]))
                else:
                    self.barrier_bars[series].setData([], [])
                    text.setText("")
            for where in ("loss", "accuracy"):
                line = self.threshold_lines[(series, where)]
                line.setValue(m.threshold)
                line.setVisible(math.isfinite(m.threshold))
                if where == "accuracy" and line.label is not None:
                    line.label.setFormat(f"\u03bb* {series} {m.threshold:.2f}")
            lines.append((series, m))
        c = self._colors
        parts = []
        for series, m in lines:
            color = c.naive if series == "naive" else c.aligned
            parts.append(f"<span style='color:{color}'><b>{series}</b></span>: barrier "
                         f"{_fmt(m.barrier)}, mean loss {_fmt(m.mean_loss)}, "
                         f"\u03bb* {_fmt(m.threshold, 2)}")
        data = f" &nbsp;(on {result.dataset})" if result.dataset else ""
        sep = "&nbsp;&nbsp;\u2022&nbsp;&nbsp;"
        self._summary.setText(sep.join(parts) + data, color=c.foreground)

    # -- lambda line -----------------------------------------------------------------------
    @Slot(float)
    def set_lambda(self, lam: float | None) -> None:
        """Move the lambda line to ``lam`` without emitting; None or NaN hides it (no step)."""
        self._syncing = True
        try:
            for line in self.lambda_lines:
                if lam is None or not math.isfinite(lam):
                    line.hide()
                else:
                    line.setValue(float(lam))
                    line.show()
        finally:
            self._syncing = False

    def lambda_value(self) -> float:
        """Where the lambda line is now."""
        return float(self.lambda_lines[0].value())

    def _on_line_moved(self, line: pg.InfiniteLine) -> None:
        if self._syncing:
            return
        # Mirror a drag on one plot to the other without feedback loops.
        self._syncing = True
        try:
            for other in self.lambda_lines:
                if other is not line:
                    other.setValue(line.value())
        finally:
            self._syncing = False

    def _on_line_released(self, line: pg.InfiniteLine) -> None:
        self.lambdaDragged.emit(round(float(line.value()), 4))

    # -- export ----------------------------------------------------------------------------
    def export_png(self, path: str | Path, which: str = "all") -> Path:
        """Save the plots as PNG: ``which`` is "all" (both plots), "loss" or "accuracy"."""
        if which == "all":
            return export_png(self.graphics, path)
        plot = self.loss_plot if which == "loss" else self.acc_plot
        return export_png(plot, path, background=self._colors.background)

    def export_csv(self, path: str | Path) -> Path:
        """Save the points as CSV: lambda, then loss and accuracy of each series per row."""
        header = ["lambda", "naive_loss", "naive_accuracy", "aligned_loss", "aligned_accuracy"]
        n = max(b.n for b in self._buf.values())
        rows = []
        for i in range(n):
            lam = next((float(b.lam[i]) for b in self._buf.values()
                        if i < b.n and math.isfinite(b.lam[i])), float("nan"))
            row: list[float] = [lam]
            for series in SERIES:
                b = self._buf[series]
                row += [float(b.loss[i]), float(b.acc[i])] if i < b.n else [math.nan, math.nan]
            rows.append(row)
        return export_csv(path, header, rows)

    def _export_entries(self) -> list[ExportEntry]:
        return [
            ("Both plots as PNG\u2026", "png", "curve.png", lambda p: self.export_png(p)),
            ("Loss plot as PNG\u2026", "png", "curve-loss.png",
             lambda p: self.export_png(p, "loss")),
            ("Accuracy plot as PNG\u2026", "png", "curve-accuracy.png",
             lambda p: self.export_png(p, "accuracy")),
            ("Curve data as CSV\u2026", "csv", "curve.csv", self.export_csv),
        ]
