"""Where a view's context menu opens and which row it acts on, for mouse and keyboard alike.

Qt hands a scroll area's context-menu event over in two coordinate systems: a mouse click's
position is in the viewport's coordinates, a keyboard request's (the Menu key, Shift+F10) in the
view's own, which include the header. Looking the row up with ``indexAt`` in the wrong one picked
the row *below* the selected one. This module uses global positions for the mouse and the
current row for the keyboard, so both act on the row the user sees.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPoint
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtWidgets import QAbstractItemView


def menu_target(view: QAbstractItemView, event: QContextMenuEvent) -> tuple[QModelIndex, QPoint]:
    """(the row the menu acts on, the global position it opens at) for ``event`` on ``view``.

    Mouse: the row under the pointer, the menu at the pointer. Keyboard: the current row, the
    menu just below it (the top-left of the viewport when there is none).
    """
    viewport = view.viewport()
    if event.reason() == QContextMenuEvent.Reason.Mouse:
        where = event.globalPos()
        return view.indexAt(viewport.mapFromGlobal(where)), where
    index = view.currentIndex()
    if not index.isValid():
        return index, viewport.mapToGlobal(QPoint(0, 0))
    rect = view.visualRect(index)
    return index, viewport.mapToGlobal(QPoint(rect.left() + rect.height(), rect.bottom()))
