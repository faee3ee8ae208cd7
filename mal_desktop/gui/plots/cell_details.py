"""CellDetails: the drill-down into one cell of the evaluation matrix.

Two plots side by side, from the cell's per-sample scores (:meth:`MatrixCell.samples`, the
``.npz`` the core's result cache keeps): the accuracy of each true class as bars (a dashed line at
the overall accuracy) and the confusion matrix (true x predicted class), coloured by each true
class's share so classes of different sizes compare, with the counts printed while the matrix is
small enough to read them. Plot items are created once; a theme change redraws in its colours.
Like the other plots, both export as print figures (PNG at the chosen DPI in light print colours
with a title and axis labels, or SVG; plots/export.py) and their data as CSV with a provenance
header (the model with its hash, the data set with its fingerprint: :meth:`set_provenance`).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ...core.errors import MalError
from ...core.toolkit.matrix import MatrixCell
from ...core.evaluate.metric_registry import SampleScores
from ..models.matrix_model import (class_names, confusion_counts, drawn_perplexity,
                                   format_value, metric_applies, per_class_accuracy,
                                   per_document, scale_color)
from ..palette import PlotColors, plot_colors, print_colors
from .export import ExportButton, ExportEntry, export_csv, export_figure, figure_entries
from .plot_grid import PlotGrid
from .style import color_axes, show_tick_values

MAX_LABELLED_CELLS = 12  # confusion matrices up to this many classes show their counts
# Up to this many classes each tick is named; more (a language model's tokens) get the axis's
# own numeric ticks, class indices: hundreds of names were drawn on top of each other.
MAX_NAMED_TICKS = 24


class CellDetails(QWidget):
    """Per-class accuracy bars and the confusion matrix of one matrix cell.

    Parameters: colors - fixed colours (the print copy of an export); None follows the theme.
    """

    def __init__(self, parent: QWidget | None = None, colors: PlotColors | None = None) -> None:
        super().__init__(parent)
        self._fixed_colors = colors
        self._colors = colors or plot_colors()
        self._where = ("", "")  # (row name, data set) of the cell shown
        self._provenance: dict[str, object] = {}
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
        # text scored per token: a bar per document in each plot, documents down the side
        # (their names are long: side by side under the bars they ran into one another)
        self.doc_ppl = pg.BarGraphItem(x0=[], y=[], width=[], height=0.75)
        bp.addItem(self.doc_ppl)
        self.doc_mean = pg.InfiniteLine(angle=90, movable=False)
        self.doc_mean.hide()
        bp.addItem(self.doc_mean)
        self.doc_bars = pg.BarGraphItem(x0=[], y=[], width=[], height=0.75)
        cp.addItem(self.doc_bars)
        self.per_token = False
        self.count_labels: list[pg.TextItem] = []
        # counts are printed in the cells only while a cell holds one: in a small panel they
        # spilled over their neighbours ("34" across two cells)
        self.conf_plot.vb.sigResized.connect(self._fit_counts)
        self.conf_plot.vb.sigRangeChanged.connect(self._fit_counts)
        self.scores: SampleScores | None = None
        self.counts: np.ndarray | None = None
        self.accuracy: np.ndarray | None = None
        self.export_button = ExportButton(self._export_entries, self)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.header, 1)
        top.addWidget(self.export_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.grid, 1)
        self._apply_colors()
        self.clear()

    def _apply_colors(self) -> None:
        c = self._colors
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
        for bars in (self.doc_ppl, self.doc_bars):
            bars.setOpts(x0=[], y=[], width=[])
        self.doc_mean.hide()
        self.mean_line.hide()
        self.image.clear()
        self._remove_counts()
        self.bar_plot.setTitle("per-class accuracy", color=self._colors.foreground)
        self.conf_plot.setTitle("confusion matrix", color=self._colors.foreground)
        for plot in (self.bar_plot, self.conf_plot):
            show_tick_values(plot, False)  # nothing to label: no stacked tick labels
        self._update_export()
        if note:
            self.header.setText(note)

    def _remove_counts(self) -> None:
        for label in self.count_labels:
            self.conf_plot.removeItem(label)
        self.count_labels = []

    def show_cell(self, cell: MatrixCell | None, row_name: str, per_token: bool = False,
                  stale: str = "") -> None:
        """Draw the drill-down of ``cell`` (None: clear). A cell whose per-sample scores
        cannot be read shows why instead. ``per_token``: the cell scores text token by token
        (its "classes" are token ids): shown per document instead. ``stale``: why the cell no
        longer describes its model (said above the plots)."""
        if cell is None:
            self.clear("Select a finished cell of the matrix.")
            return
        where = f"<b>{html.escape(row_name)}</b> on <b>{html.escape(cell.dataset)}</b>"
        if cell.error:
            self.clear(f"{where}: <span style='color:{self._colors.bad}'>"
                       f"{html.escape(cell.error)}</span>")
            return
        try:
            scores = cell.samples()
        except MalError as exc:
            self.clear(f"{where}: the per-sample scores cannot be read ({html.escape(str(exc))});"
                       " evaluate again to recompute them.")
            return
        parts = [f"{m} {format_value(m, float(v))}" for m, v in cell.metrics.items()
                 if isinstance(v, (int, float)) and metric_applies(m, cell.dataset)]
        source = "from the cache" if cell.cached else "computed now"
        dot = " \u00b7 "
        self.show_scores(scores, row_name, cell.dataset, per_token)
        warn = (f"<br><span style='color:{self._colors.bad}'>\u26a0 Stale: "
                f"{html.escape(stale)}; Evaluate again (Ctrl+E).</span>" if stale else "")
        self.header.setText(f"{where}: {dot.join(parts)}{dot}{cell.n} samples ({source})"
                            + warn)

    def show_scores(self, scores: SampleScores, row_name: str, dataset: str,
                    per_token: bool = False) -> None:
        """Draw the drill-down of per-sample ``scores`` of model ``row_name`` on ``dataset``
        (``per_token``: see :meth:`show_cell`)."""
        self.clear()
        self.per_token = per_token
        for plot in (self.bar_plot, self.conf_plot):
            show_tick_values(plot, True)
        self.scores = scores
        self.counts = confusion_counts(scores)
        self.accuracy = per_class_accuracy(scores)
        self._where = (row_name, dataset)
        self.header.setText(f"<b>{html.escape(row_name)}</b> on <b>{html.escape(dataset)}</b>")
        self._update_export()
        self._draw()

    def _draw(self) -> None:
        scores, counts, acc = self.scores, self.counts, self.accuracy
        assert scores is not None and counts is not None and acc is not None
        self._set_mode()
        if self.per_token:
            self._draw_documents()
            return
        c = self._colors
        n = scores.num_classes
        names = class_names(scores)
        named = n <= MAX_NAMED_TICKS
        ticks = [[(i, names[i]) for i in range(n)]] if named else None
        unit = "class" if named else "class (index)"
        self.bar_plot.setLabel("bottom", f"true {unit}")
        self.conf_plot.setLabel("bottom", f"predicted {unit}")
        self.conf_plot.setLabel("left", f"true {unit}")
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
        self._fit_counts()

    def _fit_counts(self, *_args: object) -> None:
        """Show the cells' counts when the widest fits inside one cell, else none."""
        vb = self.conf_plot.vb
        if not self.count_labels or vb.pixelVectors()[0] is None:  # not on screen yet
            return
        pixel_w, pixel_h = vb.viewPixelSize()  # data units per screen pixel
        if not (pixel_w > 0 and pixel_h > 0):
            return
        metrics = QFontMetrics(self.font())
        wide = max(metrics.horizontalAdvance(label.textItem.toPlainText())
                   for label in self.count_labels)
        fits = 1.0 / pixel_w >= wide + 4 and 1.0 / pixel_h >= metrics.height()
        for label in self.count_labels:
            label.setVisible(fits)

    def _set_mode(self) -> None:
        """Axes for classes (accuracy bars, a square matrix) or for documents (two bar plots:
        a language model's 'classes' are its token ids, and a vocabulary-sized confusion
        matrix with file names as class names said nothing)."""
        text, bp, cp = self.per_token, self.bar_plot, self.conf_plot
        if text:
            bp.setLabel("bottom", "perplexity")
            cp.setLabel("bottom", "next-token accuracy")
            for plot in (bp, cp):
                plot.setLabel("left", "document")
        else:
            bp.setLabel("bottom", "true class")
            bp.setLabel("left", "accuracy")
            cp.setLabel("bottom", "predicted class")
            cp.setLabel("left", "true class")
            bp.setYRange(0, 1.05, padding=0)
            bp.getAxis("left").setTicks(None)
        bp.invertY(text)  # documents top down, in name order
        cp.invertY(True)  # a matrix's row 0 on top; the first document too
        cp.setAspectLocked(not text)
        # the page tabs of a narrow panel name what is drawn ("per-class accuracy" over a
        # per-document perplexity read wrong)
        self.grid.rename(["perplexity per document", "next-token accuracy"] if text else
                         ["per-class accuracy", "confusion matrix"])
        self.graphics.setToolTip(
            "Left: perplexity of each document's tokens (dashed line: the whole text's).\n"
            "Right: next-token accuracy of each document." if text else
            "Left: accuracy of each true class (dashed line: overall accuracy).\n"
            "Right: counts of true x predicted class; the colour is the share of the "
            "true class's samples, so classes of different sizes compare.")

    def _draw_documents(self) -> None:
        scores, c = self.scores, self._colors
        assert scores is not None
        docs, _n, ppl, acc = per_document(scores)
        y = np.arange(len(docs), dtype=float)
        ticks = [[(i, d) for i, d in enumerate(docs)]] if len(docs) <= MAX_NAMED_TICKS else None
        pen = pg.mkPen(c.muted, width=0.5)
        # the class plots' items are empty: show_scores cleared them, and only it changes mode
        self.doc_ppl.setOpts(x0=0.0, y=y, width=ppl, height=0.75, pen=pen,
                             brushes=[pg.mkBrush(c.aligned)] * len(y))
        self.doc_bars.setOpts(x0=0.0, y=y, width=acc, height=0.75, pen=pen,
                              brushes=[pg.mkBrush(scale_color(a, strength=0.85)) for a in acc])
        overall = drawn_perplexity(float(scores.loss.mean())) if len(scores) else 0.0
        self.doc_mean.setPen(pg.mkPen(c.accent, width=1.5, style=Qt.PenStyle.DashLine))
        self.doc_mean.setValue(overall)
        self.doc_mean.setVisible(len(scores) > 0)
        right = float(max(ppl.max(initial=0.0), overall)) * 1.1 or 1.0
        self.bar_plot.setXRange(0, right, padding=0)
        self.conf_plot.setXRange(0, 1.05, padding=0)
        for plot in (self.bar_plot, self.conf_plot):
            plot.getAxis("left").setTicks(ticks)
            plot.getAxis("bottom").setTicks(None)
            plot.setYRange(-0.6, len(docs) - 0.4, padding=0)
        self.bar_plot.setTitle("perplexity", color=c.foreground)
        self.conf_plot.setTitle("next-token accuracy", color=c.foreground)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if self._fixed_colors is None and event.type() in (
                QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._colors = plot_colors()
            self._apply_colors()
        super().changeEvent(event)

    # -- export -----------------------------------------------------------------------------
    def set_provenance(self, provenance: Mapping[str, object]) -> None:
        """What CSV exports record (model and its hash, data set and its fingerprint, ...)."""
        self._provenance = dict(provenance)

    def _update_export(self) -> None:
        shown = self.scores is not None
        self.export_button.setEnabled(shown)
        self.export_button.setToolTip(
            "Save the per-class accuracy or the confusion matrix as a figure (PNG at the chosen "
            "resolution, or SVG) or its data as CSV" if shown else
            "Select a finished cell of the matrix to export its plots")

    def _title(self) -> str:
        row, dataset = self._where
        acc = float(self.scores.correct.mean()) if self.scores is not None and \
            len(self.scores) else math.nan
        return f"{row} on {dataset}" + (f" (accuracy {acc:.1%})" if math.isfinite(acc) else "")

    def export_figure(self, path: str | Path, which: str = "all", dpi: int = 300) -> Path:
        """Save a print figure (.png at ``dpi`` or .svg) of both plots or one of them:
        ``which`` in {"all", "accuracy", "confusion"}. Raises ValueError when no cell is shown
        or ``which`` is unknown, OSError when the file cannot be written."""
        if self.scores is None:
            raise ValueError("no cell details to export")
        if which not in ("all", "accuracy", "confusion"):
            raise ValueError(f"unknown plot {which!r}")
        copy = CellDetails(colors=print_colors())  # off screen, light print colours
        try:
            copy.show_scores(self.scores, *self._where, self.per_token)
            chosen = {"all": [copy.bar_plot, copy.conf_plot], "accuracy": [copy.bar_plot],
                      "confusion": [copy.conf_plot]}[which]
            return export_figure(chosen, path, self._title(), dpi)
        finally:
            copy.deleteLater()

    def export_csv(self, path: str | Path, which: str) -> Path:
        """Save the data behind one plot as CSV with a provenance header: ``which`` "accuracy"
        (one row per true class: samples, correct, accuracy) or "confusion" (one row per true
        and predicted class: count); for text scored per token "documents" (one row per
        document: tokens, perplexity, next-token accuracy). Raises ValueError when no cell is
        shown."""
        scores, counts, acc = self.scores, self.counts, self.accuracy
        if scores is None or counts is None or acc is None:
            raise ValueError("no cell details to export")
        row, dataset = self._where
        meta = {"model": row, "dataset": dataset, **self._provenance,
                "samples": len(scores)}
        if self.per_token:  # one row per document (see _set_mode)
            if which != "documents":
                raise ValueError(f"unknown plot {which!r} of text scored per token")
            docs, n, ppl, acc = per_document(scores)
            return export_csv(path, ["document", "tokens", "perplexity", "next_token_accuracy"],
                              [[d, int(k), float(p), float(a)]
                               for d, k, p, a in zip(docs, n, ppl, acc)], meta)
        names = class_names(scores)
        if which == "accuracy":
            totals = counts.sum(axis=1)
            rows = [[k, names[k], int(totals[k]), int(counts[k, k]), float(acc[k])]
                    for k in range(scores.num_classes)]
            return export_csv(path, ["class", "name", "samples", "correct", "accuracy"], rows,
                              meta)
        if which == "confusion":
            rows = [[t, names[t], p, names[p], int(counts[t, p])]
                    for t in range(scores.num_classes) for p in range(scores.num_classes)]
            return export_csv(path, ["true_class", "true_name", "predicted_class",
                                     "predicted_name", "count"], rows, meta)
        raise ValueError(f"unknown plot {which!r}")

    def _export_entries(self) -> list[ExportEntry]:
        if self.scores is None:
            return []
        stem = "-".join("".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in part)
                        for part in self._where)
        entries = figure_entries(f"{stem}-details", "Both plots",
                                 lambda p, dpi: self.export_figure(p, "all", dpi))
        plots = ((("accuracy", "Perplexity per document"),
                  ("confusion", "Next-token accuracy per document")) if self.per_token else
                 (("accuracy", "Per-class accuracy"), ("confusion", "Confusion matrix")))
        for which, title in plots:
            entries += figure_entries(f"{stem}-{which}", title,
                                      lambda p, dpi, w=which: self.export_figure(p, w, dpi))
        tables = ((("documents", "Per-document scores"),) if self.per_token else plots)
        for which, title in tables:
            entries.append((f"{title} as CSV\u2026", "csv", f"{stem}-{which}.csv",
                            lambda p, w=which: self.export_csv(p, w)))
        return entries


__all__ = ["CellDetails", "MAX_LABELLED_CELLS"]
