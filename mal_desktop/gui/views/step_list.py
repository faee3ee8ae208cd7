"""StepListView: the table of assembly steps (numbered rows, columns that fit or fold away,
a hint when empty, a context menu for the mouse and the Menu key)."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QContextMenuEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import (QAbstractItemView, QStyledItemDelegate, QStyleOptionViewItem,
                               QTreeView, QWidget)

from ..models.plan_model import COL_ALIGN, COL_CASE, COL_METHOD, COL_SOURCE
from .context_menu import menu_target


class _NumberedDelegate(QStyledItemDelegate):
    """Draws "3. " before the first column: the step number is the row, not model data."""

    def initStyleOption(self, option: QStyleOptionViewItem,  # noqa: N802 - Qt's name
                        index: QModelIndex | QPersistentModelIndex) -> None:
        super().initStyleOption(option, index)
        option.text = f"{index.row() + 1}.  {option.text}"


class StepListView(QTreeView):
    """The step table; shows a hint when the plan has no steps yet.

    Signals: ``menuRequested(QModelIndex, QPoint)`` - a context menu for a row (the current one
    for the Menu key) at a global position.
    """

    menuRequested = Signal(QModelIndex, QPoint)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setItemDelegateForColumn(COL_SOURCE, _NumberedDelegate(self))
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAllColumnsShowFocus(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 - Qt's name
        index, where = menu_target(self, event)
        self.menuRequested.emit(index, where)
        event.accept()

    def fit_columns(self) -> None:
        """Give every shown column the width its contents need and the step column the rest;
        columns that do not fit (width case first, then method, then alignment) are hidden
        rather than pushed behind a horizontal scroll bar or squeezing the step names: all
        three are in each row's tooltip and in the editor."""
        model, header = self.model(), self.header()
        if model is None:
            return
        avail = self.viewport().width()
        need = {c: max(self.sizeHintForColumn(c), header.sectionSizeHint(c)) + 6
                for c in range(model.columnCount())}
        shown = list(need)
        for col in (COL_CASE, COL_METHOD, COL_ALIGN):
            if sum(need[c] for c in shown) <= avail:
                break
            shown.remove(col)
        for col in need:
            self.setColumnHidden(col, col not in shown)
        rest = avail - sum(need[c] for c in shown if c != COL_SOURCE)
        for col in shown:
            header.resizeSection(col, need[col] if col != COL_SOURCE else max(rest, 90))
        hidden = [model.headerData(c, Qt.Orientation.Horizontal) for c in need if c not in shown]
        header.setToolTip("Widen the panel to see " + " and ".join(hidden) + " (also in each "
                          "row's tooltip and in the editor below)" if hidden else "")

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.fit_columns()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        model = self.model()
        if model is not None and model.rowCount() == 0:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.viewport().rect().adjusted(12, 12, -12, -12),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             "No steps yet.\nDrag a layer from a zoo model onto a layer of the "
                             "base model to add one.")
            painter.end()
