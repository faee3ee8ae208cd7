"""DiagnosticsPanel: what the alignment of one step did, in four plots.

- the (partial) permutation matrix Q (base units x zoo units) as an image: matched pairs in the
  "matched" colour (and a dot of a few pixels each, visible however large the matrix), base
  rows with no partner (zero-padded) and zoo columns left out (dropped) tinted, so all width
  cases read at a glance;
- matched / zero-padded / dropped unit counts per side (out, in) as grouped bars;
- the histogram of matched-pair costs (entries of the final cost matrix);
- the objective J per alternating iteration (it must never decrease).

What it shows is decided elsewhere (views/selected_step.py: the selected step's diagnostics,
kept per step by gui/run_results.py): ``show_step`` or ``show_empty``. Plot items are created
once; the plots sit in a :class:`PlotGrid` (two columns, one when narrow, pages when short),
and the matrix keeps square cells, so a 64 x 128 Q reads as what it is.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...core.merge.results import MAX_MATRIX, SideReport, StepDiagnostics
from ...core.merge.case_words import (explain_case, query_groups_text, rows_per_unit,
                                        side_units, unit_of)
from ..palette import PlotColors, plot_colors, print_colors
from .export import ExportButton, ExportEntry, export_csv, export_figure, figure_entries
from .plot_grid import MIN_PLOT, PlotGrid
from .style import color_axes, show_tick_values

CATEGORIES = ("matched", "padded", "dropped")
_CATEGORY_WORDS = {"matched": "matched", "padded": "zero-padded (base unit without partner)",
                   "dropped": "dropped (zoo unit left out)"}
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


class UnitAxis(pg.AxisItem):
    """An axis of unit indices that ticks only inside the matrix, 0..``extent``: with square
    cells the view of a square matrix in a wide plot reaches beyond it, where no unit lies."""

    def __init__(self, orientation: str) -> None:
        super().__init__(orientation)
        self.extent: float | None = None

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list:  # noqa: N802,N803
        if self.extent is None or maxVal == minVal or size <= 0:
            return super().tickValues(minVal, maxVal, size)
        minVal, maxVal = sorted((minVal, maxVal))  # an inverted axis (rows) asks top-down
        lo, hi = max(minVal, 0.0), min(maxVal, float(self.extent))
        if hi <= lo:
            return []
        # one level of ticks at a round spacing whose labels are at least _TICK_GAP_PX apart
        # on screen (the axis's own choice is made for its whole length, not the matrix's)
        per_unit = size / (maxVal - minVal)
        spacing = _round_step(max(1.0, _TICK_GAP_PX / per_unit))
        first = math.ceil(lo / spacing) * spacing
        return [(spacing, [v for v in np.arange(first, hi + 1e-9, spacing)])]


def _round_step(at_least: float) -> float:
    """The smallest whole round step (1, 2, 5 x 10^k, and 25 x 10^k) at least ``at_least``."""
    power = 10.0 ** math.floor(math.log10(at_least))
    factors = (1, 2, 2.5, 5, 10) if power >= 10 else (1, 2, 5, 10)
    return next(m * power for m in factors if m * power >= at_least - 1e-9)


_TICK_GAP_PX = 36  # the least room between two tick labels of the matrix's axes


# Matched pairs are drawn as dots of this many pixels over the image: a 344 x 344 image drawn
# in 200 pixels samples every other row and column, and most one-pixel pairs vanished.
_PAIR_DOT_PX = 4


class DiagnosticsPanel(QWidget):
    """Four plots describing one step's alignment; ``show_step`` fills them.

    Parameters: colors - fixed colours (the print copy of an export); None follows the theme.
    """

    def __init__(self, parent: QWidget | None = None, colors: PlotColors | None = None) -> None:
        super().__init__(parent)
        self._fixed_colors = colors
        self._colors = colors or plot_colors()
        self._current: StepDiagnostics | None = None
        self._index = -1
        self._provenance: dict[str, object] = {}
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
        self._legend = QLabel()
        self._legend.setTextFormat(Qt.TextFormat.RichText)
        self._legend.setWordWrap(True)
        self._legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._legend.setContentsMargins(4, 0, 4, 0)
        self._legend.setToolTip("\n".join(_CATEGORY_TIPS.values()))

        self.grid = PlotGrid(columns=2, min_plot=MIN_PLOT)
        self.graphics = self.grid.graphics
        self.matrix_plot: pg.PlotItem = self.grid.add_plot("matrix Q")
        self.units_plot: pg.PlotItem = self.grid.add_plot("units")
        self.costs_plot: pg.PlotItem = self.grid.add_plot("costs")
        self.objective_plot: pg.PlotItem = self.grid.add_plot("objective J")

        mp = self.matrix_plot
        self.matrix_axes = {side: UnitAxis(side) for side in ("bottom", "left")}
        mp.setAxisItems(self.matrix_axes)
        mp.setTitle("generalized permutation Q")
        mp.setLabel("bottom", "zoo unit")
        mp.setLabel("left", "base unit")
        mp.invertY(True)  # row 0 on top, like a matrix
        mp.setAspectLocked(True)  # square cells: a 64 x 128 Q is twice as wide as tall
        self.image = pg.ImageItem(axisOrder="row-major")
        mp.addItem(self.image)
        self.pairs = pg.ScatterPlotItem(size=_PAIR_DOT_PX, symbol="s", pxMode=True)
        mp.addItem(self.pairs)
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
        cp.setLabel("bottom", "similarity (higher: closer match)")
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
            for side in ("left", "bottom"):
                plot.getAxis(side).enableAutoSIPrefix(False)  # unit counts: never "x0.001"

        top = QHBoxLayout()
        top.setContentsMargins(4, 2, 4, 0)
        top.addWidget(self._header, 1)
        top.addWidget(self._side, 0, Qt.AlignmentFlag.AlignTop)
        top.addWidget(self._export, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self._legend)
        layout.addWidget(self.grid, 1)

    def _apply_colors(self) -> None:
        c = self._colors
        self.grid.set_background(c.background)
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
        # The legend is a label above the plots: in a plot title it set the plot's minimum
        # width, and was cut ("units per side" -> "d...") when the panel was narrower.
        keys = " &nbsp;".join(f"<span style='color:{getattr(c, cat)}'>\u25a0</span> "
                              f"{_CATEGORY_WORDS[cat]}" for cat in CATEGORIES)
        self._legend.setText(f"Matrix and bars: {keys}")
        self.units_plot.setTitle("units per side", color=c.foreground)
        self.histogram.setPen(pg.mkPen(c.aligned, width=1.5))
        fill = QColor(c.aligned)
        fill.setAlpha(90)
        self.histogram.setBrush(pg.mkBrush(fill))
        self.objective.setPen(pg.mkPen(c.accent, width=2))
        self.objective.setSymbolBrush(pg.mkBrush(c.accent))
        self.objective.setSymbolPen(pg.mkPen(c.accent))
        self.pairs.setBrush(pg.mkBrush(c.matched))
        self.pairs.setPen(pg.mkPen(None))
        for note in (self.matrix_note, self.costs_note, self.objective_note):
            note.setColor(c.muted)
        if self._current is not None:
            self._draw_matrix()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if self._fixed_colors is None and event.type() in (
                QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._colors = plot_colors()
            self._apply_colors()
        super().changeEvent(event)

    # -- data in ---------------------------------------------------------------------------
    @Slot(object)
    def show_step(self, diag: StepDiagnostics, index: int | None = None, stale: str = "") -> None:
        """Show the diagnostics of one step; ``index`` is the step's place in the plan now
        (default: where it was when it ran); ``stale`` says why they may no longer apply."""
        self._current = diag
        self._index = diag.index if index is None else index
        self._draw_header(diag, stale)
        for plot in (self.matrix_plot, self.units_plot, self.costs_plot, self.objective_plot):
            show_tick_values(plot, True)
        self._draw_matrix()
        self._draw_units(diag)
        self._draw_costs(diag)
        self._draw_objective(diag)

    def show_empty(self, text: str) -> None:
        """No diagnostics: empty plots (no tick values) and ``text`` (rich text) above them."""
        self._reset_plots()
        self._header.setText(text)
        self._header.setToolTip("")

    def set_provenance(self, provenance: dict[str, object]) -> None:
        """What exports record (models, step, data set, alignment)."""
        self._provenance = dict(provenance)

    def clear(self) -> None:
        """Show the empty state."""
        self.show_empty("Alignment diagnostics appear here while <b>Run</b> (F5) works.")

    def _reset_plots(self) -> None:
        self._current = None
        self._index = -1
        for plot in (self.matrix_plot, self.units_plot, self.costs_plot, self.objective_plot):
            show_tick_values(plot, False)  # no data: tick labels only crowd the note
        self.image.clear()
        self.image.hide()
        self.matrix_note.setText("nothing to show yet")  # no step selected, or not run yet
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
    def _draw_header(self, d: StepDiagnostics, stale: str = "") -> None:
        esc = html.escape
        note = f"<br><i>{esc(d.note)}</i>" if d.note else ""
        for side, report in (("out", d.out), ("in", d.inp)):
            k = rows_per_unit(d.case_text, side, report.base, report.target)
            if k > 1:  # the case counts heads; the plots count their dims
                units = side_units(d.case_text)[side]
                what = unit_of(d.case_text, side) or "units"
                note += (f"<br><span style='color:{self._colors.muted}'>{side}: the case counts "
                         f"{units[0]}\u2190{units[1]} {what} of {k} dims each; the matrix and "
                         f"bars count dims, {report.base}\u2190{report.target}</span>")
            if report.groups:  # the query-head reorders the matrix of dims cannot show
                note += (f"<br><span style='color:{self._colors.muted}'>"
                         f"{side}: {esc(query_groups_text(report.groups, report.groups_reordered))}"
                         "</span>")
        warn = (f"<br><span style='color:{self._colors.bad}'>\u26a0 Stale: {esc(stale)}; Run "
                "(F5) again.</span>" if stale else "")
        self._header.setText(f"<b>Step {self._index + 1}: {esc(d.label)}</b> &nbsp;\u00b7&nbsp; "
                             f"alignment <b>{esc(d.align)}</b><br>{esc(d.case_text)}{note}{warn}")
        self._header.setToolTip(_side_tip("out", d.out) + "\n" + _side_tip("in", d.inp)
                                + "\n\n" + explain_case(d.case_text))

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
            self.pairs.setData([], [])
            for axis in self.matrix_axes.values():
                axis.extent = None
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
        rows, cols = np.nonzero(np.asarray(q) > 0.5)
        self.pairs.setData(cols + 0.5, rows + 0.5)  # at the cells' centres
        self.matrix_axes["bottom"].extent = img.shape[1]
        self.matrix_axes["left"].extent = img.shape[0]
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
        # Short tick labels (the case words are in the header): long ones overlapped.
        ticks = [(_GROUP_X[s] + 1.0, f"{s} {r.base}\u2190{r.target}") for s, r in sides.items()]
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

    def _print_copy(self) -> "DiagnosticsPanel":
        """An off-screen copy in print colours showing the same step."""
        copy = DiagnosticsPanel(colors=print_colors())
        copy._side.setCurrentIndex(self._side.currentIndex())
        if self._current is not None:
            copy.show_step(self._current, self._index)
        return copy

    def export_figure(self, path: str | Path, which: str = "all", dpi: int = 300) -> Path:
        """Save a print figure (.png at ``dpi`` or .svg) of all four plots or one of them:
        ``which`` in {"all", "matrix", "units", "costs", "objective"}."""
        copy = self._print_copy()
        try:
            plots = {"matrix": copy.matrix_plot, "units": copy.units_plot,
                     "costs": copy.costs_plot, "objective": copy.objective_plot}
            chosen = list(plots.values()) if which == "all" else [plots[which]]
            d = self._current
            title = (f"Step {self._index + 1}: {d.label} (alignment {d.align})" if d is not None
                     else "Alignment diagnostics")
            return export_figure(chosen, path, title, dpi, legend=copy._legend.text())
        finally:
            copy.deleteLater()

    def export_png(self, path: str | Path, which: str = "all", dpi: int = 300) -> Path:
        """:meth:`export_figure` as PNG."""
        return self.export_figure(path, which, dpi)

    def export_csv(self, path: str | Path, which: str) -> Path:
        """Save the data behind one plot as CSV (``which`` as for :meth:`export_png`, not "all").

        matrix: one row per matched pair (side, base_unit, zoo_unit); units: one row per side;
        costs: one matched-pair cost per row; objective: J per iteration.
        Raises ValueError when nothing is shown.
        """
        d = self._current
        if d is None:
            raise ValueError("no step diagnostics to export")
        meta = {**self._provenance, "step": f"Step {self._index + 1}: {d.label}",
                "alignment": d.align, "width case": d.case_text}
        if which == "matrix":
            rows: list[list[object]] = []
            for side, q in (("out", d.out_matrix), ("in", d.in_matrix)):
                if q is not None:
                    for b, t in zip(*np.nonzero(np.asarray(q) > 0.5)):
                        rows.append([side, int(b), int(t)])
            return export_csv(path, ["side", "base_unit", "zoo_unit"], rows, meta)
        if which == "units":
            rows = [[side, r.base, r.target, r.case, r.matched, r.padded, r.dropped,
                     r.groups, r.groups_reordered] for side, r in (("out", d.out), ("in", d.inp))]
            return export_csv(path, ["side", "base", "zoo", "case", "matched", "padded",
                                     "dropped", "query_groups", "query_groups_reordered"],
                              rows, meta)
        if which == "costs":
            costs = [] if d.costs is None else np.asarray(d.costs, dtype=float).reshape(-1)
            return export_csv(path, ["cost"], [[float(c)] for c in costs], meta)
        if which == "objective":
            return export_csv(path, ["iteration", "J"],
                              [[i + 1, float(j)] for i, j in enumerate(d.objective)], meta)
        raise ValueError(f"unknown plot {which!r}")

    def _export_entries(self) -> list[ExportEntry]:
        entries = figure_entries("diagnostics", "All four plots",
                                 lambda p, dpi: self.export_figure(p, "all", dpi))
        if self._current is None:
            return entries
        n = self._index + 1
        for which, title in (("matrix", "Permutation matrix"), ("units", "Unit counts"),
                             ("costs", "Cost histogram"), ("objective", "Objective J")):
            entries += figure_entries(f"step{n}-{which}", title,
                                      lambda p, dpi, w=which: self.export_figure(p, w, dpi))
        for which, title in (("matrix", "Matched pairs"), ("units", "Unit counts"),
                             ("costs", "Matched-pair costs"), ("objective", "Objective J")):
            entries.append((f"{title} as CSV\u2026", "csv", f"step{n}-{which}.csv",
                            lambda p, w=which: self.export_csv(p, w)))
        return entries


def _side_tip(side: str, r: SideReport) -> str:
    return (f"{side}: base {r.base} units, zoo {r.target} units ({r.case}); "
            f"{r.matched} matched, {r.padded} zero-padded, {r.dropped} dropped"
            + (f"; {query_groups_text(r.groups, r.groups_reordered)}" if r.groups else ""))
