"""MatrixTable: the evaluation matrix's table (models x data sets), whose values stay in view.

Sized to its contents, the model-name column took a narrow panel's whole width and the values
(the point of the table) were cut to a sliver; here the names give way first, elided in the
middle (a model's seed and variant sit at the end of its name; the row's tooltip has it whole).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QTableView, QWidget

NAME_MIN = 96  # the model-name column keeps at least this much (logical px)


class MatrixTable(QTableView):
    """A table whose first column (the model names) gives way to the value columns."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def fit_columns(self) -> None:
        """Every column at its contents' width (a new result), then :meth:`fit_names`."""
        if self.model() is None or self.model().columnCount() == 0:
            return
        self.resizeColumnsToContents()
        self.fit_names()

    def fit_names(self) -> None:
        """The name column at its contents' width where the value columns (as they are: the
        user may have resized them) leave room for it, else narrower, not below NAME_MIN."""
        model = self.model()
        if model is None or model.columnCount() == 0:
            return
        header = self.horizontalHeader()
        values = sum(header.sectionSize(c) for c in range(1, model.columnCount()))
        room = self.viewport().width() - values
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
