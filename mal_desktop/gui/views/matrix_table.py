"""MatrixTable: the evaluation matrix's table (models x data sets), whose names and values stay in
view.

Sized to its contents, the model-name column took a narrow panel's whole width and the values
(the point of the table) were cut to a sliver; so the names give way first, elided in the middle
(a model's seed and variant sit at the end of its name; the row's tooltip has it whole). With
more data sets than fit, the values scroll sideways, and scrolled as a plain column the names
went out of view with them: a selected cell in the fourth column showed a column of numbers and
no model. The name column is therefore frozen (Qt's frozen-column pattern): a second view of the
same model, showing column 0 only, lies over the table's first column, shares its selection,
scrolls with it vertically and stays put sideways.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QAbstractItemView, QFrame, QHeaderView, QTableView, QWidget

NAME_MIN = 96  # the model-name column keeps at least this much (logical px)
NAME_SHARE = 0.5  # ... and up to this share of the table when the values must scroll anyway


class MatrixTable(QTableView):
    """A table whose first column (the model names) stays in view and gives way to the values."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.names = QTableView(self)
        names = self.names
        names.setObjectName("evalMatrixNames")
        names.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keyboard work stays in the table
        names.setFrameShape(QFrame.Shape.NoFrame)
        names.verticalHeader().hide()
        names.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        names.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        names.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        names.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        names.setWordWrap(False)
        names.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        names.horizontalHeader().setSectionsClickable(True)
        names.horizontalHeader().sectionClicked.connect(self._sort_by_name)
        self.horizontalHeader().sortIndicatorChanged.connect(self._show_sort)
        self.horizontalHeader().sectionResized.connect(self._column_resized)
        self.verticalScrollBar().valueChanged.connect(names.verticalScrollBar().setValue)
        names.verticalScrollBar().valueChanged.connect(self.verticalScrollBar().setValue)
        self.verticalHeader().sectionResized.connect(
            lambda row, _old, new: names.setRowHeight(row, new))

    # -- the frozen name column ------------------------------------------------------------------
    def setModel(self, model: QAbstractItemModel | None) -> None:  # noqa: N802 - Qt's name
        super().setModel(model)
        self.names.setModel(model)
        if model is None:
            return
        self.names.setSelectionModel(self.selectionModel())
        self.names.horizontalHeader().setSortIndicatorShown(self.isSortingEnabled())
        for signal in (model.modelReset, model.layoutChanged, model.columnsInserted,
                       model.rowsInserted):
            signal.connect(self._sync_names)
        self._sync_names()

    def setSortingEnabled(self, enable: bool) -> None:  # noqa: N802 - Qt's name
        super().setSortingEnabled(enable)
        self.names.horizontalHeader().setSortIndicatorShown(enable)

    def setItemDelegate(self, delegate) -> None:  # noqa: N802 - Qt's name
        super().setItemDelegate(delegate)
        self.names.setItemDelegate(delegate)  # the same look (a selected name keeps its frame)

    def _sync_names(self, *_args: object) -> None:
        """Only the name column in the overlay, at the table's row heights and name width."""
        model = self.model()
        if model is None:
            return
        for col in range(model.columnCount()):
            self.names.setColumnHidden(col, col != 0)
        for row in range(model.rowCount()):
            self.names.setRowHeight(row, self.rowHeight(row))
        self._place_names()

    def _column_resized(self, col: int, _old: int, new: int) -> None:
        if col == 0:
            self.names.setColumnWidth(0, new)
            self._place_names()

    def _place_names(self) -> None:
        """The overlay over the first column, header included."""
        model = self.model()
        shown = model is not None and model.columnCount() > 0
        self.names.setVisible(shown)
        if not shown:
            return
        self.names.setColumnWidth(0, self.columnWidth(0))
        self.names.horizontalHeader().setFixedHeight(self.horizontalHeader().height())
        frame = self.frameWidth()
        self.names.setGeometry(frame + self.verticalHeader().width(), frame, self.columnWidth(0),
                               self.viewport().height() + self.horizontalHeader().height())
        self.names.verticalScrollBar().setValue(self.verticalScrollBar().value())

    def _show_sort(self, section: int, order: Qt.SortOrder) -> None:
        self.names.horizontalHeader().setSortIndicator(section, order)

    def _sort_by_name(self, _section: int) -> None:
        header = self.horizontalHeader()
        if not self.isSortingEnabled():
            return
        ascending = Qt.SortOrder.AscendingOrder
        order = (Qt.SortOrder.DescendingOrder if header.sortIndicatorSection() == 0
                 and header.sortIndicatorOrder() == ascending else ascending)
        self.sortByColumn(0, order)

    def scrollTo(self, index: QModelIndex,  # noqa: N802 - Qt's name
                 hint: QAbstractItemView.ScrollHint = QAbstractItemView.ScrollHint.EnsureVisible
                 ) -> None:
        """A value cell is scrolled clear of the frozen names, not left beneath them."""
        if not index.isValid() or index.column() == 0:
            # a name: the rows may scroll, the columns stay where they are
            bar = self.horizontalScrollBar()
            keep = bar.value()
            super().scrollTo(index, hint)
            bar.setValue(keep)
            return
        super().scrollTo(index, hint)
        left = self.visualRect(index).left()
        covered = self.columnWidth(0) - left
        if covered > 0:
            bar = self.horizontalScrollBar()
            bar.setValue(bar.value() - covered)

    # -- widths ----------------------------------------------------------------------------------
    def fit_columns(self) -> None:
        """Every column at its contents' width (a new result), then :meth:`fit_names`."""
        if self.model() is None or self.model().columnCount() == 0:
            return
        self.resizeColumnsToContents()
        self.fit_names()

    def fit_names(self) -> None:
        """The name column at its contents' width where the value columns (as they are: the
        user may have resized them) leave room for it; else, as the values scroll beneath the
        names anyway, up to NAME_SHARE of the table, not below NAME_MIN."""
        model = self.model()
        if model is None or model.columnCount() == 0:
            return
        header = self.horizontalHeader()
        values = sum(header.sectionSize(c) for c in range(1, model.columnCount()))
        width = self.viewport().width()
        room = max(width - values, int(width * NAME_SHARE))
        # the overlay follows through sectionResized (_column_resized)
        header.resizeSection(0, max(NAME_MIN, min(self.sizeHintForColumn(0), room)))

    def needed_width(self) -> int:
        """The table's width that shows every column at its contents' width."""
        model = self.model()
        columns = 0 if model is None else sum(
            max(self.sizeHintForColumn(c), self.horizontalHeader().sectionSizeHint(c))
            for c in range(model.columnCount()))
        bar = self.style().pixelMetric(self.style().PixelMetric.PM_ScrollBarExtent)
        return columns + 2 * self.frameWidth() + bar

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.fit_names()

    def updateGeometries(self) -> None:  # noqa: N802 - Qt's name
        super().updateGeometries()
        if hasattr(self, "names"):  # also called while QTableView is being constructed
            self._place_names()
