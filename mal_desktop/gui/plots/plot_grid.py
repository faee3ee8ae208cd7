"""PlotGrid: the plots of a panel in a grid that reflows to the room it gets, never clipped.

A pyqtgraph scene does not shrink its plots below their minimum (axes, labels, title): squeezed
further, the view just cuts them off (the accuracy plot cut at 1280 px, the confusion matrix cut
at the right edge). So each panel's plots live here: a scroll area around the graphics view that
puts as many plots side by side as the width allows (each at least ``min_plot`` in logical
pixels, so 2x scaling is handled by Qt), one column when narrow, and scrolls when the panel is
shorter than its rows need. Qt layouts see an honest minimum size instead of a fixed geometry.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QScrollArea, QSizePolicy, QWidget

MIN_PLOT = QSize(280, 190)  # below this a plot's axes and labels crowd the data out
_MARGIN, _SPACING = 2, 6


class PlotGrid(QScrollArea):
    """Plots in up to ``columns`` columns, reflowed on resize; vertical scrolling when short.

    Parameters: columns - the most plots side by side; min_plot - the smallest size a plot is
    drawn at. Attribute ``graphics``: the GraphicsLayoutWidget (its ``ci`` holds the plots).
    """

    def __init__(self, columns: int = 2, min_plot: QSize = MIN_PLOT,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._max_columns = max(1, columns)
        self._min_plot = QSize(min_plot)
        self._plots: list[pg.PlotItem] = []
        self._columns = 0
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.ci.setContentsMargins(_MARGIN, _MARGIN, _MARGIN, _MARGIN)
        self.graphics.ci.layout.setSpacing(_SPACING)
        self.setWidget(self.graphics)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add_plot(self) -> pg.PlotItem:
        """A new plot at the end of the grid."""
        plot = pg.PlotItem()
        self._plots.append(plot)
        self._columns = 0  # force a reflow
        self.reflow()
        return plot

    @property
    def plots(self) -> list[pg.PlotItem]:
        """The plots, in order."""
        return list(self._plots)

    @property
    def columns(self) -> int:
        """How many plots stand side by side now."""
        return self._columns

    def minimum_plot_size(self) -> QSize:
        """The smallest size a plot is drawn at (logical pixels)."""
        return QSize(self._min_plot)

    def set_background(self, color: str) -> None:
        """The colour around and behind the plots."""
        self.graphics.setBackground(color)
        self.viewport().setStyleSheet(f"background: {color};")

    def reflow(self) -> None:
        """Place the plots for the width the viewport has now."""
        n = len(self._plots)
        if n == 0:
            return
        # The width the plots may use: the area's, less a vertical scroll bar that may appear
        # (columns chosen for the viewport before it did would overflow it).
        bar = self.style().pixelMetric(self.style().PixelMetric.PM_ScrollBarExtent)
        width = max(1, self.width() - 2 * self.frameWidth() - bar - 2 * _MARGIN)
        step = self._min_plot.width() + _SPACING
        columns = max(1, min(self._max_columns, n, (width + _SPACING) // step))
        if columns != self._columns:
            ci = self.graphics.ci
            for plot in self._plots:
                if plot in ci.items:
                    ci.removeItem(plot)
            for k, plot in enumerate(self._plots):
                ci.addItem(plot, row=k // columns, col=k % columns)
            self._columns = columns
        rows = math.ceil(n / columns)
        self.graphics.setMinimumSize(columns * step - _SPACING + 2 * _MARGIN,
                                     rows * (self._min_plot.height() + _SPACING) + 2 * _MARGIN)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # One plot's worth: below that the panel scrolls rather than clipping or shrinking more.
        return QSize(min(self._min_plot.width(), 160), min(self._min_plot.height(), 120))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        columns = max(1, min(self._max_columns, len(self._plots)))
        rows = math.ceil(max(1, len(self._plots)) / columns)
        return QSize(columns * self._min_plot.width(), rows * self._min_plot.height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.reflow()
