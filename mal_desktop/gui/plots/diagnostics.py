"""DiagnosticsPanel: what the alignment of one step did, in four plots.

- the (partial) permutation matrix Q (base units x zoo units) as an image: matched pairs in the
  "matched" colour, base rows with no partner (zero-padded) and zoo columns left out (dropped)
  tinted, so all width cases read at a glance;
- matched / zero-padded / dropped unit counts per side (out, in) as grouped bars;
- the histogram of matched-pair costs (entries of the final cost matrix);
- the objective J per alternating iteration (it must never decrease).

Diagnostics arrive per step while an assembly runs (``show_step``) and are kept by step index, so
selecting a step later (``select_step``) shows its last diagnostics. Plot items are created once.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...core.merge.results import MAX_MATRIX, SideReport, StepDiagnostics
from ..palette import PlotColors, plot_colors
from .export import ExportButton, ExportEntry, export_csv, export_png
from .style import color_axes

CATEGORIES = ("matched", "padded", "dropped")
_CATEGORY_TIPS = {"matched": "matched: base unit paired with a zoo unit",
                  "padded": "zero-padded: base unit with no zoo partner (base wider)",
                  "dropped": "dropped: zoo unit left out (base narrower)"}
_BAR_WIDTH = 0.8
_GROUP_X = {"out": 0.0, "in": 4.0}  # bars at group x + 0, 1, 2


def _rgba(color: str, alpha: int = 255) -> np.ndarray:
    q = QColor(color)
    return np.array([q.red(), q.green(), q.blue(), alpha], dtype=np.uint8)


def matrix_image(q: np.ndarray, colors: PlotColors) -> np.ndarray:
    """An RGBA image (rows = base units, columns = zoo units) of a partial permutation ``q``.

    Matched entries get ``colors.matched``; rows without a one (zero-padded base units) and
    columns without a one (dropped zoo units) are tinted ``padded`` / ``dropped``.
    """
    q = np.asarray(q) > 0.5
    m, n = q.shape
    img = np.empty((m, n, 4), dtype=np.uint8)
    img[:] = _rgba(colors.matrix_off)
    padded_rows = ~q.any(axis=1)
    dropped_cols = ~q.any(axis=0)
    img[padded_rows, :] = _rgba(colors.padded, 110)
    img[:, dropped_cols] = _rgba(colors.dropped, 90)
    img[q] = _rgba(colors.matched)
    return img


class DiagnosticsPanel(QWidget):
    """Four plots describing one step's alignment; ``show_step`` fills them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._colors = plot_colors()
        self._by_index: dict[int, StepDiagnostics] = {}
        self._current: StepDiagnostics | None = None
        self._build()
        self._apply_colors()
        self.clear()

    # -- construction (once) -----------------------------------------------------------------
    def _build(self) -> None:
        self._header = QLabel()
        self._header.setTextFormat(Qt.TextFormat.RichText)
        self._header.setWordWrap(True)
        self._header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._side = QComboBox()
        self._side.addItem("Q out (output units)", "out")
        self._side.addItem("Q in (input units)", "in")
        self._side.setToolTip("Which side's generalized permutation the matrix plot shows")
        self._side.currentIndexChanged.connect(self._draw_matrix)
        self._export = ExportButton(self._export_entries, self)

        g = self.graphics = pg.GraphicsLayoutWidget()
        self.matrix_plot: pg.PlotItem = g.addPlot(row=0, col=0)
        self.units_plot: pg.PlotItem = g.addPlot(row=0, col=1)
        self.costs_plot: pg.PlotItem = g.addPlot(row=1, col=0)
        self.objective_plot: pg.PlotItem = g.addPlot(row=1, col=1)

        mp = self.matrix_plot
        mp.setTitle("generalized permutation Q")
        mp.setLabel("bottom", "zoo unit")
        mp.setLabel("left", "base unit")
        mp.invertY(True)  # row 0 on top, like a matrix
        mp.setAspectLocked(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        mp.addItem(self.image)
        self.matrix_note = pg.TextItem(anchor=(0.5, 0.5))
        mp.addItem(self.matrix_note, ignoreBounds=True)

        up = self.units_plot
        up.setLabel("left", "units")
        up.setMouseEnabled(x=False, y=False)
        self.bars = {c: pg.BarGraphItem(x=[], height=[], width=_BAR_WIDTH) for c in CATEGORIES}
        for item in self.bars.values():
            up.addItem(item)
        self.bar_labels = {(side, c): pg.TextItem(anchor=(0.5, 1.0)) for side in _GROUP_X
                           for c in CATEGORIES}
        for item in self.bar_labels.values():
            up.addItem(item, ignoreBounds=True)

        cp = self.costs_plot
        cp.setTitle("matched-pair costs")
        cp.setLabel("bottom", "cost (similarity of matched pair)")
        cp.setLabel("left", "pairs")
        self.histogram = cp.plot([], [], stepMode="center", fillLevel=0)
        self.costs_note = pg.TextItem(anchor=(0.5, 0.5))
        cp.addItem(self.costs_note, ignoreBounds=True)

        op = self.objective_plot
        op.setTitle("objective J per iteration")
        op.setLabel("bottom", "iteration")
        op.setLabel("left", "J")
        self.objective = op.plot([], [], symbol="o", symbolSize=6)
        self.objective_note = pg.TextItem(anchor=(0.5, 0.5))
        op.addItem(self.objective_note, ignoreBounds=True)

        for plot in (mp, up, cp, op):
            plot.showGrid(x=plot is not mp, y=plot is not mp, alpha=0.15)

        top = QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 0)
        top.addWidget(self._header, 1)
        top.addWidget(self._side)
        top.addWidget(self._export)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(g, 1)

    def _apply_colors(self) -> None:
        c = self._colors
        self.graphics.setBackground(c.background)
        plots = (self.matrix_plot, self.units_plot, self.costs_plot, self.objective_plot)
        color_axes(plots, c)
        for plot in plots:
            plot.titleLabel.setAttr("color", c.foreground)
            plot.setTitle(plot.titleLabel.text, color=c.foreground)
        for cat, item in self.bars.items():
            color = getattr(c, cat)
            item.setOpts(brush=pg.mkBrush(color), pen=pg.mkPen(color))
        for item in self.bar_labels.values():
            item.setColor(c.foreground)
        # The legend lives in the title (an in-plot legend would cover the bars).
        keys = " ".join(f"<span style='color:{getattr(c, cat)}'>\u25a0</span> {cat}"
                        for cat in CATEGORIES)
        self.units_plot.setTitle(f"units per side: {keys}", color=c.foreground)
        self.histogram.setPen(pg.mkPen(c.aligned, width=1.5))
        fill = QColor(c.aligned)
        fill.setAlpha(90)
        self.histogram.setBrush(pg.mkBrush(fill))
        self.objective.setPen(pg.mkPen(c.accent, width=2))
        self.objective.setSymbolBrush(pg.mkBrush(c.accent))
        self.objective.setSymbolPen(pg.mkPen(c.accent))
        for note in (self.matrix_note, self.costs_note, self.objective_note):
            note.setColor(c.muted)
        if self._current is not None:
            self._draw_matrix()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._colors = plot_colors()
            self._apply_colors()
        super().changeEvent(event)

    # -- data in ---------------------------------------------------------------------------
    @Slot(object)
    def show_step(self, diag: StepDiagnostics) -> None:
        """Show (and remember by step index) the diagnostics of one step."""
        self._by_index[diag.index] = diag
        self._current = diag
        self._draw_header(diag)
        self._draw_matrix()
        self._draw_units(diag)
        self._draw_costs(diag)
        self._draw_objective(diag)

    @Slot(int)
    def select_step(self, index: int) -> None:
        """Show the remembered diagnostics of step ``index``, or say there are none yet."""
        diag = self._by_index.get(index)
        if diag is not None:
            if diag is not self._current:
                self.show_step(diag)
            return
        self._reset_plots()
        if index < 0:
            self._header.setText("Select a step to see how its alignment went.")
        else:
            self._header.setText(f"No diagnostics for step {index + 1} yet: press "
                                 "<b>Run</b> (F5) to align it.")

    def forget(self) -> None:
        """Drop remembered diagnostics (the plan changed, they are stale) but keep the view."""
        self._by_index.clear()

    def clear(self) -> None:
        """Forget everything and show the empty state."""
        self._by_index.clear()
        self._reset_plots()
        self._header.setText("Alignment diagnostics appear here while <b>Run</b> (F5) works.")

    def _reset_plots(self) -> None:
        self._current = None
        self.image.clear()
        self.image.hide()
        self.matrix_note.setText("no step shown")
        self.matrix_note.setPos(0.5, 0.5)
        self.matrix_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self.matrix_plot.setTitle("generalized permutation Q")
        for item in self.bars.values():
            item.setOpts(x=[], height=[])
        for item in self.bar_labels.values():
            item.setText("")
        self.units_plot.getAxis("bottom").setTicks([[(1.0, "out"), (5.0, "in")]])
        self.units_plot.setRange(xRange=(-0.7, 6.7), yRange=(0, 1), padding=0)
        self.histogram.setData([0.0, 1.0], [0.0])
        self.histogram.hide()
        self.costs_note.setText("")
        self.costs_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self.objective.setData([], [])
        self.objective_note.setText("")
        self.objective_plot.getAxis("bottom").setTickSpacing()
        self.objective_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)

    # -- drawing ---------------------------------------------------------------------------
    def _draw_header(self, d: StepDiagnostics) -> None:
        esc = html.escape
        note = f"<br><i>{esc(d.note)}</i>" if d.note else ""
        self._header.setText(f"<b>Step {d.index + 1}</b>: {esc(d.label)} &nbsp;\u00b7&nbsp; "
                             f"alignment <b>{esc(d.align)}</b><br>{esc(d.case_text)}{note}")
        self._header.setToolTip(_side_tip("out", d.out) + "\n" + _side_tip("in", d.inp))

    @Slot()
    def _draw_matrix(self) -> None:
        d = self._current
        if d is None:
            return
        side = self._side.currentData() or "out"
        q = d.out_matrix if side == "out" else d.in_matrix
        report = d.out if side == "out" else d.inp
        if q is None:
            self.image.clear()
            self.image.hide()
            if d.align == "none":
                why = "no alignment ran (alignment 'none'): units are paired by index"
            elif max(report.base, report.target) > MAX_MATRIX:
                why = f"matrix too large to draw ({report.base} x {report.target})"
            elif report.case == "fixed":
                why = "fixed side: identity (units must not move)"
            else:
                why = "no matrix reported for this side"
            self.matrix_note.setText(why)
            self.matrix_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            self.matrix_note.setPos(0.5, 0.5)
            return
        self.matrix_note.setText("")
        img = matrix_image(q, self._colors)
        self.image.setImage(img, autoLevels=False)
        self.image.setRect(0, 0, img.shape[1], img.shape[0])
        self.image.show()
        self.matrix_plot.setRange(xRange=(0, img.shape[1]), yRange=(0, img.shape[0]),
                                  padding=0.02)
        self.matrix_plot.setTitle(f"Q {side}: {img.shape[0]} base \u00d7 {img.shape[1]} zoo units")

    def _draw_units(self, d: StepDiagnostics) -> None:
        sides = {"out": d.out, "in": d.inp}
        top = 1
        for k, cat in enumerate(CATEGORIES):
            xs = [_GROUP_X[s] + k for s in sides]
            hs = [float(getattr(r, cat)) for r in sides.values()]
            self.bars[cat].setOpts(x=xs, height=hs, width=_BAR_WIDTH)
            for side, x, h in zip(sides, xs, hs):
                label = self.bar_labels[(side, cat)]
                label.setText(str(int(h)))
                label.setPos(x, h)
                top = max(top, h)
        ticks = [(_GROUP_X[s] + 1.0, f"{s}: {r.base} \u2190 {r.target} ({r.case})")
                 for s, r in sides.items()]
        self.units_plot.getAxis("bottom").setTicks([ticks])
        self.units_plot.setRange(xRange=(-0.7, 6.7), yRange=(0, top * 1.45), padding=0)

    def _draw_costs(self, d: StepDiagnostics) -> None:
        costs = None if d.costs is None else np.asarray(d.costs, dtype=float).reshape(-1)
        if costs is not None:
            costs = costs[np.isfinite(costs)]
        if costs is None or costs.size == 0:
            self.histogram.setData([0.0, 1.0], [0.0])
            self.histogram.hide()
            self.costs_note.setText("no costs (no alignment ran)" if d.align == "none"
                                    else "no costs reported")
            self.costs_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            self.costs_note.setPos(0.5, 0.5)
            return
        bins = int(np.clip(np.sqrt(costs.size) * 2, 5, 60))
        lo, hi = float(costs.min()), float(costs.max())
        if hi - lo < 1e-12:  # all equal: one visible bin around the value
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(costs, bins=bins, range=(lo, hi))
        self.histogram.setData(edges, counts.astype(float))
        self.histogram.show()
        self.costs_note.setText("")
        self.costs_plot.enableAutoRange()

    def _draw_objective(self, d: StepDiagnostics) -> None:
        j = np.asarray(d.objective, dtype=float)
        if j.size == 0:
            self.objective.setData([], [])
            self.objective_note.setText("no iterations (no alignment ran)")
            self.objective_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            self.objective_note.setPos(0.5, 0.5)
            return
        # Iterations are whole numbers: one major tick per iteration up to ~10 ticks.
        step = max(1, int(np.ceil(j.size / 10)))
        self.objective_plot.getAxis("bottom").setTickSpacing(major=step, minor=step)
        self.objective.setData(np.arange(1, j.size + 1, dtype=float),
                               np.where(np.isfinite(j), j, np.nan), connect="finite")
        self.objective_note.setText("")
        self.objective_plot.enableAutoRange()

    # -- access for tests and export -------------------------------------------------------
    @property
    def current(self) -> StepDiagnostics | None:
        """The diagnostics on screen (None when empty)."""
        return self._current

    def export_png(self, path: str | Path, which: str = "all") -> Path:
        """Save as PNG: ``which`` in {"all", "matrix", "units", "costs", "objective"}."""
        if which == "all":
            return export_png(self.graphics, path)
        plot = {"matrix": self.matrix_plot, "units": self.units_plot, "costs": self.costs_plot,
                "objective": self.objective_plot}[which]
        return export_png(plot, path, background=self._colors.background)

    def export_csv(self, path: str | Path, which: str) -> Path:
        """Save the data behind one plot as CSV (``which`` as for :meth:`export_png`, not "all").

        matrix: one row per matched pair (side, base_unit, zoo_unit); units: one row per side;
        costs: one matched-pair cost per row; objective: J per iteration.
        Raises ValueError when nothing is shown.
        """
        d = self._current
        if d is None:
            raise ValueError("no step diagnostics to export")
        if which == "matrix":
            rows: list[list[object]] = []
            for side, q in (("out", d.out_matrix), ("in", d.in_matrix)):
                if q is not None:
                    for b, t in zip(*np.nonzero(np.asarray(q) > 0.5)):
                        rows.append([side, int(b), int(t)])
            return export_csv(path, ["side", "base_unit", "zoo_unit"], rows)
        if which == "units":
            rows = [[side, r.base, r.target, r.case, r.matched, r.padded, r.dropped]
                    for side, r in (("out", d.out), ("in", d.inp))]
            return export_csv(path, ["side", "base", "zoo", "case", "matched", "padded",
                                     "dropped"], rows)
        if which == "costs":
            costs = [] if d.costs is None else np.asarray(d.costs, dtype=float).reshape(-1)
            return export_csv(path, ["cost"], [[float(c)] for c in costs])
        if which == "objective":
            return export_csv(path, ["iteration", "J"],
                              [[i + 1, float(j)] for i, j in enumerate(d.objective)])
        raise ValueError(f"unknown plot {which!r}")

    def _export_entries(self) -> list[ExportEntry]:
        entries: list[ExportEntry] = [
            ("All four plots as PNG\u2026", "png", "diagnostics.png",
             lambda p: self.export_png(p))]
        if self._current is None:
            return entries
        n = self._current.index + 1
        for which, title in (("matrix", "Permutation matrix"), ("units", "Unit counts"),
                             ("costs", "Cost histogram"), ("objective", "Objective J")):
            entries.append((f"{title} as PNG\u2026", "png", f"step{n}-{which}.png",
                            lambda p, w=which: self.export_png(p, w)))
        for which, title in (("matrix", "Matched pairs"), ("units", "Unit counts"),
                             ("costs", "Matched-pair costs"), ("objective", "Objective J")):
            entries.append((f"{title} as CSV\u2026", "csv", f"step{n}-{which}.csv",
                            lambda p, w=which: self.export_csv(p, w)))
        return entries


def _side_tip(side: str, r: SideReport) -> str:
    return (f"{side}: base {r.base} units, zoo {r.target} units ({r.case}); "
            f"{r.matched} matched, {r.padded} zero-padded, {r.dropped} dropped")
