"""LayerFilterProxy: the search of a layer tree pane, by name or by tensor shape."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QSortFilterProxyModel

from ...core.graph.tree import parse_shape
from .layer_tree_model import SEARCH_ROLE


class LayerFilterProxy(QSortFilterProxyModel):
    """Keeps rows whose path contains the query, or whose shape equals a shape query ("64x32").

    Ancestors of matches stay (recursive filtering) and so do the children of a matching module
    (a search for "blocks.1" shows that block's layers).
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setAutoAcceptChildRows(True)
        self._text = ""
        self._shape = ""

    def set_query(self, text: str) -> None:
        """Filter by ``text`` (empty shows everything)."""
        text = text.strip().lower()
        shape = parse_shape(text) if text else None
        staged = hasattr(self, "beginFilterChange")  # Qt >= 6.10; older: invalidate after
        if staged:
            self.beginFilterChange()
        self._text = text
        self._shape = "x".join(str(s) for s in shape) if shape else ""
        if staged:
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateRowsFilter()

    @property
    def query(self) -> str:
        return self._text

    def filterAcceptsRow(self, source_row: int,  # noqa: N802 - Qt's name
                         source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if not self._text:
            return True
        index = self.sourceModel().index(source_row, 0, source_parent)
        key = str(self.sourceModel().data(index, SEARCH_ROLE) or "")
        path, _, shape = key.partition("\n")
        if self._shape and shape == self._shape:
            return True
        return self._text in path
