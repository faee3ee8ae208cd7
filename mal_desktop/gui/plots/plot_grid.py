"""PlotGrid: the plots of a panel in a grid that reflows to the room it gets, never clipped.

A pyqtgraph scene does not shrink its plots below their minimum (axes, labels, title): squeezed
further, the view just cuts them off (the accuracy plot cut at 1280 px, the confusion matrix cut
at the right edge). So each panel's plots live here, each drawn at least ``min_plot`` (logical
pixels, so 2x scaling is handled by Qt):

- as many side by side as the width allows, up to ``columns`` (one column when narrow);
- when the panel is too short for the rows that gives, as many side by side as fit instead
  (a wide, short panel shows its four plots in one row);
- when even that needs more rows than fit, pages: a tab bar above the plots names each page's
  plots, and every plot on the page is shown whole. At 1280 x 720 the diagnostics' four plots
  used to sit in a scroll area that had to be scrolled to see an x axis.

Only when a single plot does not fit (a panel made smaller than ``min_plot``) does the area
scroll. Qt layouts see an honest minimum size instead of a fixed geometry.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import QSize, QSizeF, Qt, Slot
from PySide6.QtGui import QResizeEvent, QShowEvent
from PySide6.QtWidgets import QFrame, QScrollArea, QSizePolicy, QTabBar, QVBoxLayout, QWidget

MIN_PLOT = QSize(280, 170)  # below this a plot's axes and labels crowd the data out
_MARGIN, _SPACING = 2, 6
# Room the axis labels need outside their axis: pyqtgraph reserves 80 % of a label's height and
# draws it 5 px lower (AxisItem's "nudge"), so a label in the last row or column hung over the
# edge of the scene and its descenders were cut. Each plot's layout keeps this much room.
AXIS_LABEL_OVERHANG = 6
# Room to the right of each plot's data: a plot has no right axis, so its view box ran to the
# plot's edge, and the plots of the last column to the window's (the confusion matrix's last
# column ended 3 px from it and read as cut off, docs/screenshots/evaluate.png).
RIGHT_ROOM = 10


class PlotGrid(QWidget):
    """Plots in up to ``columns`` columns (more, or pages, when the panel is short).

    Parameters: columns - the most plots side by side when there is height to spare;
    min_plot - the smallest size a plot is drawn at. Attributes: ``graphics`` - the
    GraphicsLayoutWidget (its ``ci`` holds the plots on the current page); ``area`` - the scroll
    area around it; ``pages`` - the tab bar, shown when the plots are paged.
    """

    def __init__(self, columns: int = 2, min_plot: QSize = MIN_PLOT,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._max_columns = max(1, columns)
        self._min_plot = QSize(min_plot)
        self._plots: list[pg.PlotItem] = []
        self._names: list[str] = []
        self._columns = 0
        self._per_page = 0
        self._page = 0
        self._placed: list[pg.PlotItem] = []
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.ci.setContentsMargins(_MARGIN, _MARGIN, _MARGIN, _MARGIN)
        self.graphics.ci.layout.setSpacing(_SPACING)
        self.area = QScrollArea()
        self.area.setWidget(self.graphics)
        self.area.setWidgetResizable(True)
        self.area.setFrameShape(QFrame.Shape.NoFrame)
        self.area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.pages = QTabBar()
        self.pages.setObjectName("plotPages")
        self.pages.setDocumentMode(True)
        self.pages.setExpanding(False)
        self.pages.setDrawBase(False)
        # every page's tab in sight, names elided: with scroll buttons a narrow panel showed
        # "per-class accuracy | confusi" and arrows, the second page all but hidden
        self.pages.setUsesScrollButtons(False)
        self.pages.setElideMode(Qt.TextElideMode.ElideRight)
        self.pages.setToolTip("The panel is too short for all its plots at once: they are shown "
                              "in pages (make the panel taller to see them together)")
        self.pages.hide()
        self.pages.currentChanged.connect(self._on_page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.pages)
        layout.addWidget(self.area, 1)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add_plot(self, name: str = "") -> pg.PlotItem:
        """A new plot at the end of the grid; ``name`` labels it in page tabs."""
        plot = pg.PlotItem()
        left, top, right, bottom = plot.layout.getContentsMargins()
        plot.layout.setContentsMargins(max(left, AXIS_LABEL_OVERHANG), top,
                                       max(right, RIGHT_ROOM), max(bottom, AXIS_LABEL_OVERHANG))
        # The same preferred size for every plot, none below the minimum: left to their own
        # hints, a plot with a long title took its neighbour's room (squeezed to 270 px).
        plot.setMinimumSize(QSizeF(self._min_plot))
        plot.setPreferredSize(QSizeF(self._min_plot))
        self._plots.append(plot)
        self._names.append(name or f"plot {len(self._plots)}")
        self._columns = 0  # force a reflow
        self.reflow()
        return plot

    def rename(self, names: list[str]) -> None:
        """New labels for the plots, in order (the page tabs follow): a panel whose plots now
        show something else."""
        self._names = list(names) + self._names[len(names):]
        self._sync_tabs()

    @property
    def plots(self) -> list[pg.PlotItem]:
        """The plots, in order."""
        return list(self._plots)

    def visible_plots(self) -> list[pg.PlotItem]:
        """The plots on the page shown now (all of them when not paged)."""
        return list(self._placed)

    @property
    def columns(self) -> int:
        """How many plots stand side by side now."""
        return self._columns

    @property
    def page_count(self) -> int:
        """How many pages the plots are shown in (1: all at once)."""
        return max(1, math.ceil(len(self._plots) / max(1, self._per_page)))

    def minimum_plot_size(self) -> QSize:
        """The smallest size a plot is drawn at (logical pixels)."""
        return QSize(self._min_plot)

    def show_plot(self, plot: pg.PlotItem) -> None:
        """Bring the page holding ``plot`` forward."""
        if plot in self._plots and self._per_page:
            self.pages.setCurrentIndex(self._plots.index(plot) // self._per_page)

    def set_background(self, color: str) -> None:
        """The colour around and behind the plots."""
        self.graphics.setBackground(color)
        self.area.viewport().setStyleSheet(f"background: {color};")

    # -- layout ---------------------------------------------------------------------------------
    def _layout_for(self, width: int, height: int) -> tuple[int, int]:
        """(columns, plots per page) for a viewport of ``width`` x ``height``."""
        n = len(self._plots)
        step_w = self._min_plot.width() + _SPACING
        step_h = self._min_plot.height() + _SPACING
        if height - 2 * _MARGIN < self._min_plot.height():  # one row scrolls: less width
            width -= self.style().pixelMetric(self.style().PixelMetric.PM_ScrollBarExtent)
        fit_w = max(1, (width - 2 * _MARGIN + _SPACING) // step_w)
        fit_h = max(1, (height - 2 * _MARGIN + _SPACING) // step_h)
        columns = max(1, min(self._max_columns, n, fit_w))
        if math.ceil(n / columns) > fit_h:  # short: use the width before paging
            columns = max(1, min(n, fit_w))
        if not self.isVisible() or math.ceil(n / columns) <= fit_h:
            return columns, n  # not shown yet (an export's copy): no pages
        tabs = self.pages.sizeHint().height()
        fit_h = max(1, (height - tabs - 2 * _MARGIN + _SPACING) // step_h)
        return columns, columns * fit_h

    def reflow(self) -> None:
        """Place the plots for the size the panel has now."""
        n = len(self._plots)
        if n == 0:
            return
        width = max(1, self.width() - 2 * self.area.frameWidth())
        height = max(1, self.height() - 2 * self.area.frameWidth())
        columns, per_page = self._layout_for(width, height)
        first = self._placed[0] if self._placed else self._plots[0]
        page = self._plots.index(first) // per_page
        if (columns, per_page, page) != (self._columns, self._per_page, self._page) or \
                not self._placed:
            self._place(columns, per_page, page)
        rows = math.ceil(len(self._placed) / columns)
        step = self._min_plot.width() + _SPACING
        self.graphics.setMinimumSize(columns * step - _SPACING + 2 * _MARGIN,
                                     rows * (self._min_plot.height() + _SPACING) + 2 * _MARGIN)

    def _place(self, columns: int, per_page: int, page: int) -> None:
        ci = self.graphics.ci
        for plot in self._placed:
            if plot in ci.items:
                ci.removeItem(plot)
        self._placed = self._plots[page * per_page:(page + 1) * per_page]
        for k, plot in enumerate(self._placed):
            ci.addItem(plot, row=k // columns, col=k % columns)
        self._columns, self._per_page, self._page = columns, per_page, page
        self._sync_tabs()

    def _sync_tabs(self) -> None:
        """One tab per page, named after its plots; hidden when everything fits at once."""
        count = self.page_count
        self.pages.blockSignals(True)
        while self.pages.count() > count:
            self.pages.removeTab(self.pages.count() - 1)
        for i in range(count):
            names = " \u00b7 ".join(self._names[i * self._per_page:(i + 1) * self._per_page])
            if i >= self.pages.count():
                self.pages.addTab("")
            self.pages.setTabText(i, names)
            self.pages.setTabToolTip(i, names)  # whole where the tab is elided
        self.pages.setCurrentIndex(self._page)
        self.pages.blockSignals(False)
        self.pages.setVisible(count > 1)

    @Slot(int)
    def _on_page(self, index: int) -> None:
        if 0 <= index != self._page and self._per_page:
            self._place(self._columns, self._per_page, index)
            self.reflow()

    # -- Qt -------------------------------------------------------------------------------------
    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # One plot's width whole: a splitter may not squeeze the panel narrower (the cell
        # details were squeezed to 160 px beside the evaluation matrix). Not its height: the
        # window, welcome page and all, must fit a 1280 x 720 screen; a panel made shorter
        # than one plot scrolls.
        return QSize(self._min_plot.width() + 2 * _MARGIN, min(self._min_plot.height(), 120))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        columns = max(1, min(self._max_columns, len(self._plots)))
        rows = math.ceil(max(1, len(self._plots)) / columns)
        return QSize(columns * self._min_plot.width(), rows * self._min_plot.height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.reflow()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.reflow()
