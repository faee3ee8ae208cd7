"""CurvePlot: loss and accuracy vs lambda, naive vs aligned, filling in point by point.

Plot items are created once; points land in preallocated NaN-filled buffers that are pushed with
``setData`` at most every ``_REFRESH_MS`` (the worker may report faster than it is useful to
redraw). Non-finite values are kept in the buffers (and in the CSV) but drawn as gaps.

What it shows is decided elsewhere (views/selected_step.py: the selected step): ``show_empty``,
``show_live`` (a run in progress) or ``show_curve`` (a finished curve). A finished curve leads
with what matters for a layer-level merge: the mean loss along the path (mean LMC loss), lambda*
and the accuracy at the step's lambda. The chord barrier (the loss's rise above the straight
line from L(0) to L(1)) is drawn only where it carries information: when a transplanted layer
makes L(1) the worst point, it reads 0 while the loss climbs, so the summary gives its value
marked "no bump: the loss climbs to λ 1" and the plot draws no bar.

The step's lambda is a draggable vertical line; releasing it emits ``lambdaDragged(float)``,
which the panel turns into one undo command. Text lives in Qt labels above the plots (they wrap;
nothing is drawn over the curves), and the plots sit in a :class:`PlotGrid` that stacks them when
the panel is narrow instead of clipping them.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...core.evaluate.metrics import CurvePoint, CurveResult
from ..palette import PlotColors, plot_colors, print_colors
from .export import ExportButton, ExportEntry, export_csv, export_figure, figure_entries
from .curve_data import (Buffers, accuracy_at, barrier_informative, finite_or_nan, fmt,
                         perplexity_at, plain)
from .plot_grid import MIN_PLOT, PlotGrid
from .style import color_axes

SERIES = ("naive", "aligned")
_REFRESH_MS = 50  # at most ~20 redraws a second however fast points arrive
LAMBDA_STAR_TIP = ("\u03bb*: the largest \u03bb up to which the merged model's accuracy stays "
                   "within 1 point of the base model's (\u03bb = 0)")
MEAN_LOSS_TIP = "mean LMC loss: the loss averaged over the \u03bb grid (lower is better)"
BARRIER_TIP = ("barrier: how far the loss rises above the straight line (chord) from L(0) to "
               "L(1). Shown only when the curve rises above that line: when the end point "
               "\u03bb = 1 (the zoo layer transplanted) is itself the worst, the barrier is 0 "
               "while the loss climbs, which says nothing about the path.")


def _uninformative(lambdas: Sequence[float], loss: Sequence[float]) -> str:
    """Why a chord barrier says nothing, in words: "no bump: the loss climbs to λ 1" (a 0
    next to a loss rising 0.18 -> 0.94 read as "no problem")."""
    ends = [(v, lam) for lam, v in zip(lambdas, loss) if math.isfinite(v)]
    if len(ends) < 2:
        return "too few points"
    worst = max((ends[0], ends[-1]), key=lambda e: e[0])[1]
    return f"no bump: the loss climbs to λ {worst:g}" if max(
        v for v, _ in ends) - min(v for v, _ in ends) > 1e-3 else "no bump: the loss is flat"


class CurvePlot(QWidget):
    """Two plots (loss, accuracy in %) vs lambda, each with naive and aligned series.

    Parameters: colors - fixed colours (the print copy of an export); None follows the theme.
    Signals: ``lambdaDragged(float)`` when the user releases the lambda line.
    """

    lambdaDragged = Signal(float)

    def __init__(self, parent: QWidget | None = None, colors: PlotColors | None = None) -> None:
        super().__init__(parent)
        self._buf = {s: Buffers() for s in SERIES}
        self._result: CurveResult | None = None
        self._fixed_colors = colors
        self._colors = colors or plot_colors()
        self._lam: float | None = None
        self._step_lam: float | None = None  # the lambda the summary's accuracy is read at
        self._provenance: dict[str, object] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._last_refresh = 0.0
        self._syncing = False
        self._build()
        self._apply_colors()
        self.show_empty("Interpolation curve", "Run (F5) evaluates the selected step.")

    # -- construction (once) -----------------------------------------------------------------
    def _build(self) -> None:
        self._title = QLabel()
        self._title.setObjectName("curveTitle")
        self._title.setWordWrap(True)
        self._title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._legend = QLabel("")
        self._legend.setObjectName("curveLegend")
        self._legend.setTextFormat(Qt.TextFormat.RichText)
        self._legend.setWordWrap(True)
        self._legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._summary = QLabel("")
        self._summary.setObjectName("curveSummary")
        self._summary.setTextFormat(Qt.TextFormat.RichText)
        self._summary.setWordWrap(True)
        self._summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._summary.setToolTip("\n".join((MEAN_LOSS_TIP, LAMBDA_STAR_TIP, BARRIER_TIP)))
        self._export = ExportButton(self._export_entries, self)

        self.grid = PlotGrid(columns=2, min_plot=MIN_PLOT)
        self.graphics = self.grid.graphics
        self.loss_plot: pg.PlotItem = self.grid.add_plot("loss")
        self.acc_plot: pg.PlotItem = self.grid.add_plot("accuracy")
        self.acc_plot.setXLink(self.loss_plot)
        for plot, label in ((self.loss_plot, "loss"), (self.acc_plot, "accuracy (%)")):
            plot.setLabel("bottom", "\u03bb (merging factor)")
            plot.setLabel("left", label)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setXRange(0.0, 1.0, padding=0.02)
            plot.setMouseEnabled(x=False, y=True)
            plot.getViewBox().setLimits(xMin=-0.05, xMax=1.05)
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)
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

        # lambda*: one unlabelled marker per series on both plots (the values are in the
        # summary above the plots: labels on the lines stacked on each other and the curves).
        self.threshold_lines: dict[tuple[str, str], pg.InfiniteLine] = {}
        for series in SERIES:
            for plot, where in ((self.loss_plot, "loss"), (self.acc_plot, "accuracy")):
                line = pg.InfiniteLine(angle=90, movable=False)
                line.setToolTip(f"{LAMBDA_STAR_TIP} ({series})")
                plot.addItem(line, ignoreBounds=True)
                self.threshold_lines[(series, where)] = line

        # The current step's lambda: draggable, mirrored on both plots; its value is in the
        # legend (one place, always the line's own value).
        self.lambda_lines: list[pg.InfiniteLine] = []
        for plot in (self.loss_plot, self.acc_plot):
            line = pg.InfiniteLine(pos=0.5, angle=90, movable=True, bounds=(0.0, 1.0))
            line.setToolTip("The selected step's \u03bb: drag to change it (undoable)")
            line.setZValue(20)
            line.sigPositionChanged.connect(self._on_line_moved)
            line.sigPositionChangeFinished.connect(self._on_line_released)
            plot.addItem(line, ignoreBounds=True)
            self.lambda_lines.append(line)

        top = QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 0)
        top.addWidget(self._title, 1)
        top.addWidget(self._export, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        for label in (self._legend, self._summary):
            label.setContentsMargins(4, 0, 4, 0)
            layout.addWidget(label)
        layout.addWidget(self.grid, 1)

    def _apply_colors(self) -> None:
        c = self._colors
        self.grid.set_background(c.background)
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
                self.threshold_lines[(series, where)].setPen(
                    pg.mkPen(color, width=1, style=Qt.PenStyle.DashDotLine))
        for series, item in self.barrier_texts.items():
            item.setColor(c.naive if series == "naive" else c.aligned)
        for line in self.lambda_lines:
            line.setPen(pg.mkPen(c.accent, width=2))
            line.setHoverPen(pg.mkPen(c.accent, width=4))
        self._update_legend()
        if self._result is not None:
            self._draw_markers(self._result)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if self._fixed_colors is None and event.type() in (
                QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._colors = plot_colors()
            self._apply_colors()
        super().changeEvent(event)

    def _update_legend(self) -> None:
        c = self._colors
        lam = self._lam
        value = f" = {lam:.2f}" if lam is not None and math.isfinite(lam) else ""
        self._legend.setText(
            f"<span style='color:{c.naive}'>\u2505\u25bc naive</span>&nbsp;&nbsp;"
            f"<span style='color:{c.aligned}'>\u2501\u25cf aligned</span>&nbsp;&nbsp;"
            f"<span style='color:{c.accent}'>\u2503 \u03bb{value} (drag)</span>&nbsp;&nbsp;"
            f"<span style='color:{c.muted}'>\u2506 \u03bb*</span>")

    # -- what is shown -----------------------------------------------------------------------
    def _reset(self) -> None:
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

    def show_empty(self, title: str, hint: str) -> None:
        """No curve: ``title`` (plain text) above empty axes and ``hint`` (rich text) below it."""
        self._reset()
        self._title.setText(f"<b>{html.escape(title)}</b>")
        self._summary.setText(f"<span style='color:{self._colors.muted}'>{hint}</span>")
        self.refresh()

    def show_live(self, title: str, points: Sequence[CurvePoint] = ()) -> None:
        """A curve being computed: ``points`` so far; more come through :meth:`add_point`."""
        self._reset()
        self._title.setText(f"<b>{html.escape(title)}</b>")
        self._summary.setText(f"<span style='color:{self._colors.muted}'>Computing\u2026 points "
                              "appear as they are evaluated; the summary follows at the end."
                              "</span>")
        for point in points:
            self._put(point)
        self.refresh()

    def show_curve(self, result: CurveResult, title: str, stale: str = "",
                   lam: float | None = None) -> None:
        """A finished curve under ``title``; ``stale`` says why it may no longer apply ("" when
        it does); ``lam`` is the step's lambda (its accuracy is in the summary)."""
        self.set_result(result, lam)
        warn = (f"<span style='color:{self._colors.bad}'>\u26a0 Stale: {html.escape(stale)}; "
                "Run (F5) again.</span>" if stale else "")
        self._title.setText(f"<b>{html.escape(title)}</b>")
        if warn:
            self._summary.setText(f"{warn}<br>{self._summary.text()}")

    def set_title(self, text: str) -> None:
        """The line above the plots (plain text)."""
        self._title.setText(f"<b>{html.escape(text)}</b>")

    def title_text(self) -> str:
        """The title as plain text."""
        return plain(self._title.text())

    def summary_text(self) -> str:
        """The summary as plain text."""
        return plain(self._summary.text())

    def set_provenance(self, provenance: Mapping[str, object]) -> None:
        """What exports record about the curve (models, step, data set, alignment)."""
        self._provenance = dict(provenance)

    # -- data in ---------------------------------------------------------------------------
    def _put(self, point: CurvePoint) -> None:
        if point.series not in self._buf:
            raise ValueError(f"unknown curve series {point.series!r} (expected naive or aligned)")
        self._buf[point.series].put(int(point.index), float(point.lam), float(point.loss),
                                    float(point.accuracy))

    @Slot(object)
    def add_point(self, point: CurvePoint) -> None:
        """Record one curve point (any order, NaN/inf allowed); the plot redraws at once when it
        has not for ``_REFRESH_MS``, else shortly (a timer alone starved while points kept
        arriving, so the curve appeared only at the end)."""
        self._put(point)
        if time.monotonic() - self._last_refresh >= _REFRESH_MS / 1000.0:
            self.refresh()
        elif not self._timer.isActive():
            self._timer.start()

    def set_result(self, result: CurveResult, lam: float | None = None) -> None:
        """Show a finished curve: all points, lambda* and the barriers that carry information."""
        self._reset()
        self._result = result
        self._step_lam = lam
        for series in SERIES:
            metrics = getattr(result, series)
            buf = self._buf[series]
            for i, (x, loss, acc) in enumerate(zip(result.lambdas, metrics.loss,
                                                   metrics.accuracy)):
                buf.put(i, x, loss, acc)
        self.refresh()
        self._draw_markers(result, lam)

    def clear(self) -> None:
        """Forget all points and markers."""
        self.show_empty("Interpolation curve", "Run (F5) evaluates the selected step.")

    @Slot()
    def refresh(self) -> None:
        """Push the buffers to the plot items now (normally done by the throttle)."""
        self._timer.stop()
        self._last_refresh = time.monotonic()
        for series, buf in self._buf.items():
            n = buf.n
            lam = buf.lam[:n]
            self.curves[(series, "loss")].setData(lam, finite_or_nan(buf.loss[:n]),
                                                  connect="finite")
            self.curves[(series, "accuracy")].setData(lam, finite_or_nan(buf.acc[:n] * 100.0),
                                                      connect="finite")
        if not any(b.n for b in self._buf.values()):
            self.loss_plot.setYRange(0.0, 1.0, padding=0.05)
        else:
            self.loss_plot.enableAutoRange(axis="y")

    def series_data(self, series: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(lambda, values) as drawn by the curve of ``series`` and ``metric`` (copies)."""
        x, y = self.curves[(series, metric)].getOriginalDataset()
        return (np.array([]) if x is None else np.array(x)), \
            (np.array([]) if y is None else np.array(y))

    # -- markers ---------------------------------------------------------------------------
    def _draw_markers(self, result: CurveResult, lam: float | None = None) -> None:
        lam = self._step_lam if lam is None else lam  # a redraw (theme) keeps the summary
        lams = np.asarray(result.lambdas, dtype=float)
        shown_barrier: list[str] = []
        for series in SERIES:
            m = getattr(result, series)
            loss = np.asarray(m.loss, dtype=float)
            text = self.barrier_texts[series]
            self.chords[series].setData([], [])
            self.barrier_bars[series].setData([], [])
            text.setText("")
            if barrier_informative(result.lambdas, m) and np.isfinite(loss[[0, -1]]).all():
                chord = (1.0 - lams) * loss[0] + lams * loss[-1]
                gap = np.where(np.isfinite(loss), loss - chord, -np.inf)
                k = int(np.argmax(gap))
                self.chords[series].setData(lams, chord)
                self.barrier_bars[series].setData([lams[k], lams[k]], [chord[k], loss[k]])
                text.setText(f"barrier {m.barrier:.3f}")
                text.setPos(lams[k] + 0.015, 0.5 * (chord[k] + loss[k]))
                shown_barrier.append(series)
            for where in ("loss", "accuracy"):
                line = self.threshold_lines[(series, where)]
                line.setValue(m.threshold)
                line.setVisible(math.isfinite(m.threshold))
        self._summary.setText(self._summary_html(result, lam, shown_barrier))

    def _summary_html(self, result: CurveResult, lam: float | None,
                      shown_barrier: list[str]) -> str:
        c = self._colors

        def pair(values: dict[str, str]) -> str:
            return " \u00b7 ".join(f"<span style='color:{c.naive if s == 'naive' else c.aligned}'>"
                                   f"{s}</span> {values[s]}" for s in SERIES if s in values)

        naive, aligned = result.naive, result.aligned
        mean = pair({"naive": fmt(naive.mean_loss), "aligned": fmt(aligned.mean_loss)})
        star = pair({"naive": fmt(naive.threshold, 2), "aligned": fmt(aligned.threshold, 2)})
        parts = [f"<b>mean LMC loss</b> {mean}", f"<b>\u03bb*</b> {star}"]
        if lam is not None and math.isfinite(lam):
            accs = {s: accuracy_at(result.lambdas, getattr(result, s), lam) for s in SERIES}
            # off the grid the value is read off the straight line between two measured
            # points (accuracy is not linear in lambda): say so
            about = "" if any(abs(lam - g) < 1e-9 for g in result.lambdas) else (
                f" <span style='color:{c.muted}'>(interpolated between grid points)</span>")
            parts.append(f"<b>accuracy at \u03bb {lam:.2f}</b> " + pair(
                {s: f"{100 * a:.1f}%" if math.isfinite(a) else "n/a" for s, a in accs.items()})
                + about)
            if result.per_token:  # a language model is read by its perplexity, exp(loss)
                ppl = {s: perplexity_at(result.lambdas, getattr(result, s), lam) for s in SERIES}
                parts.append(f"<b>perplexity at \u03bb {lam:.2f}</b> " + pair(
                    {s: f"{v:.2f}" if math.isfinite(v) else "n/a" for s, v in ppl.items()})
                    + about)
        # Always given, as `mal curve` prints it; where the chord barrier says nothing (an end
        # point is the worst point, so it reads 0 while the loss climbs) the value says so.
        parts.append("<b>barrier</b> " + pair(
            {s: fmt(getattr(result, s).barrier) if s in shown_barrier
             else f"{fmt(getattr(result, s).barrier)} <span style='color:{c.muted}'>"
                  f"({_uninformative(result.lambdas, getattr(result, s).loss)})</span>"
             for s in SERIES}))
        data = f" &nbsp;(on {html.escape(result.dataset)})" if result.dataset else ""
        note = ""
        if (result.alignment or {}).get("step_align") == "none":
            # the diagnostics say no alignment ran: the aligned line is not what the step does
            note = (f"<br><span style='color:{c.muted}'>This step merges without alignment "
                    "(the naive line); the aligned line shows chain alignment for "
                    "comparison.</span>")
        return "&nbsp;&nbsp;\u2022&nbsp;&nbsp;".join(parts) + data + note

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
        self._lam = None if lam is None or not math.isfinite(lam) else float(lam)
        self._update_legend()

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
        self._lam = float(line.value())
        self._update_legend()

    def _on_line_released(self, line: pg.InfiniteLine) -> None:
        self.lambdaDragged.emit(round(float(line.value()), 4))

    # -- export ----------------------------------------------------------------------------
    def _print_copy(self) -> "CurvePlot":
        """An off-screen copy in print colours showing the same points and markers."""
        copy = CurvePlot(colors=print_colors())
        for series, buf in self._buf.items():
            copy._buf[series] = buf
        copy._result = self._result
        copy.refresh()
        if self._result is not None:
            copy._draw_markers(self._result)
        copy.set_lambda(self._lam)
        return copy

    def export_figure(self, path: str | Path, which: str = "all", dpi: int = 300) -> Path:
        """Save a print figure (.png at ``dpi`` or .svg): ``which`` is "all", "loss" or
        "accuracy". The title names the step and the data set."""
        copy = self._print_copy()
        try:
            plots = {"all": [copy.loss_plot, copy.acc_plot], "loss": [copy.loss_plot],
                     "accuracy": [copy.acc_plot]}[which]
            for plot, name in ((copy.loss_plot, "loss"), (copy.acc_plot, "accuracy (%)")):
                plot.setTitle(name, color="#000000", size="9pt")
            return export_figure(plots, path, self.title_text() or "Interpolation curve", dpi,
                                 legend=copy._legend.text())
        finally:
            copy.deleteLater()

    def export_png(self, path: str | Path, which: str = "all", dpi: int = 300) -> Path:
        """:meth:`export_figure` as PNG."""
        return self.export_figure(path, which, dpi)

    def export_csv(self, path: str | Path) -> Path:
        """Save the points as CSV: lambda, then loss and accuracy of each series per row, after
        a provenance block (models, step, data set, alignment, version)."""
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
        return export_csv(path, header, rows, self._provenance)

    def _export_entries(self) -> list[ExportEntry]:
        entries: list[ExportEntry] = []
        for which, what, name in (("all", "Both plots", "curve"), ("loss", "Loss plot",
                                                                   "curve-loss"),
                                  ("accuracy", "Accuracy plot", "curve-accuracy")):
            entries += figure_entries(name, what, lambda p, d, w=which:
                                      self.export_figure(p, w, d))
        entries.append(("Curve data as CSV\u2026", "csv", "curve.csv", self.export_csv))
        return entries


__all__ = ["CurvePlot", "SERIES", "accuracy_at", "barrier_informative"]
