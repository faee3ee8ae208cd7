"""LayerTreePane: a search box (filtering through :class:`LayerFilterProxy`) over a QTreeView of one model's layer tree.

Zoo panes drag weight layers; the base pane accepts them. While a zoo layer hovers over a base
row, the row is tinted green (fits) or red (refused) and ``dropHint(text, ok)`` carries the
width case or the reason, for the status bar. The decision is the model's (``canDropMimeData``
asks the core preflight); the view only paints it. Repeated blocks start collapsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtCore import (QEvent, QItemSelectionModel, QModelIndex, QObject,
                            QPersistentModelIndex, QPoint, QSortFilterProxyModel, Qt, QTimer,
                            Signal, Slot)
from PySide6.QtGui import (QColor, QContextMenuEvent, QDrag, QDragEnterEvent, QDragLeaveEvent,
                           QDragMoveEvent, QDropEvent, QPainter, QPaintEvent, QPalette)
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QHeaderView, QLabel, QLineEdit,
                               QMenu, QStyleOptionViewItem, QTabWidget, QToolTip, QTreeView,
                               QVBoxLayout, QWidget)

from ...core.merge.plan import AssemblyStep
from ..models.layer_filter import LayerFilterProxy
from ..models.layer_tree_model import (COL_NAME, COL_PARAMS, COL_SHAPE, COL_SPACE, COL_STATS,
                                       HAS_MODULES_ROLE, IS_LAYER_ROLE, PATH_ROLE, REPEAT_ROLE,
                                       QtLayerTreeModel)
from ..models.mime import LAYER_MIME
from ..workspace import ModelEntry, Workspace
from .context_menu import menu_target
from .output_choice import OutputChoice

_AUTO_EXPAND_ROWS = 400  # expand a new tree fully only up to this many rows


class LayerTreeView(QTreeView):
    """QTreeView with drop feedback: the hovered row is tinted by whether the drop fits.

    Signals: ``dropHint(str, bool)``; ``menuRequested(QModelIndex, QPoint)`` - a context menu
    for a row (the current one for the Menu key) at a global position.
    """

    dropHint = Signal(str, bool)
    menuRequested = Signal(QModelIndex, QPoint)

    def __init__(self, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self._target: QPersistentModelIndex | None = None
        self._target_ok = False
        self._tip_text = ""  # the hint of the row under the drag (kept for a refused drop)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAllColumnsShowFocus(True)
        self.setDropIndicatorShown(False)  # the row tint is the indicator
        self.setDragDropOverwriteMode(True)  # drops land *on* rows, never between them
        self.setAutoExpandDelay(700)  # hovering a collapsed block opens it during a drag
        if role == "zoo":
            self.setDragEnabled(True)
            self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        else:
            self.setAcceptDrops(True)
            self.setDragDropMode(QAbstractItemView.DragDropMode.DropOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.placeholder = ""

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 - Qt's name
        index, where = menu_target(self, event)
        self.menuRequested.emit(index, where)
        event.accept()

    def startDrag(self, supportedActions: Qt.DropAction) -> None:  # noqa: N802 - Qt's name
        """Drag the pressed layer with a pixmap of its name cell *beside* the cursor: Qt's default
        pixmap (the whole row, opaque) lies exactly over the hovered base row and hides its tint."""
        model = self.model()
        indexes = [i for i in self.selectedIndexes() if i.column() == 0
                   and model.flags(i) & Qt.ItemFlag.ItemIsDragEnabled] if model else []
        mime = model.mimeData(indexes) if indexes else None
        if mime is None:
            return
        drag = QDrag(self)
        drag.setMimeData(mime)
        drag.setPixmap(self.viewport().grab(self.visualRect(indexes[0])))
        drag.setHotSpot(QPoint(-16, -12))  # below right of the cursor
        drag.exec(supportedActions & Qt.DropAction.CopyAction, Qt.DropAction.CopyAction)

    # -- drop feedback ---------------------------------------------------------------------------
    def drop_target(self) -> tuple[QModelIndex, bool] | None:
        """The row tinted now and whether the drop there fits (None when none is)."""
        if self._target is None or not self._target.isValid():
            return None
        return QModelIndex(self._target), self._target_ok

    def _set_target(self, index: QModelIndex | None, ok: bool) -> None:
        self._target = QPersistentModelIndex(index) if index is not None and index.isValid() \
            else None
        self._target_ok = ok
        self.viewport().update()

    def _ask(self, event: QDragMoveEvent | QDropEvent) -> tuple[QModelIndex, bool]:
        index = self.indexAt(event.position().toPoint())
        index = index.siblingAtColumn(0) if index.isValid() else index
        model = self.model()
        ok = model is not None and model.canDropMimeData(
            event.mimeData(), Qt.DropAction.CopyAction, -1, -1, index)
        return index, ok

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        if self.role == "base" and event.mimeData().hasFormat(LAYER_MIME):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt's name
        super().dragMoveEvent(event)  # auto-scroll and auto-expand
        index, ok = self._ask(event)
        if self._target is None or QModelIndex(self._target) != index:
            self._show_tip(event, index)
        self._set_target(index, ok)
        if ok:
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()  # the cursor shows "no drop"; the status bar says why

    def _show_tip(self, event: QDragMoveEvent, index: QModelIndex) -> None:
        """The drop's width case (or why not) next to the cursor, as well as in the status bar."""
        model = self.model()
        if model is None or not index.isValid():
            QToolTip.hideText()
            return
        source = model
        while isinstance(source, QSortFilterProxyModel):
            source = source.sourceModel()
        if isinstance(source, QtLayerTreeModel):
            src_index = model.mapToSource(index) if isinstance(model, QSortFilterProxyModel) \
                else index
            _ok, text, _steps = source.evaluate_drop(event.mimeData(), -1, src_index)
            self._tip_text = text
            pos = event.position().toPoint()
            QToolTip.showText(self.viewport().mapToGlobal(pos), text, self.viewport(),
                              self.visualRect(index))

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802 - Qt's name
        super().dragLeaveEvent(event)
        # A drop on a refused row never reaches dropEvent: Qt sends a leave on the release. Then
        # the reason stays in the status bar; a drag that moves away (button held) clears it.
        target = self.drop_target()
        released = not QApplication.mouseButtons() & Qt.MouseButton.LeftButton
        refused = bool(target is not None and not target[1] and released and self._tip_text)
        self._set_target(None, False)
        self._end_drag()
        QToolTip.hideText()
        self.dropHint.emit(self._tip_text if refused else "", not refused)
        self._tip_text = ""

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        index = self.indexAt(event.position().toPoint())
        index = index.siblingAtColumn(0) if index.isValid() else index
        model = self.model()
        ok = model is not None and model.dropMimeData(
            event.mimeData(), Qt.DropAction.CopyAction, -1, -1, index)
        self._set_target(None, False)
        self._end_drag()
        QToolTip.hideText()
        if ok:
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def _end_drag(self) -> None:
        source = self.model()
        while isinstance(source, QSortFilterProxyModel):
            source = source.sourceModel()
        if isinstance(source, QtLayerTreeModel):
            source.end_drag()

    def drawRow(self, painter: QPainter, option: QStyleOptionViewItem,  # noqa: N802
                index: QModelIndex | QPersistentModelIndex) -> None:
        target = self._target
        if target is not None and target.isValid() and target.row() == index.row() \
                and target.parent() == index.parent():
            color = QColor("#2e9e5b" if self._target_ok else "#d64545")
            color.setAlpha(70)
            super().drawRow(painter, option, index)
            painter.fillRect(option.rect, color)  # after: alternate rows paint opaque backgrounds
            edge = QColor(color)
            edge.setAlpha(220)
            painter.setPen(edge)
            painter.drawRect(option.rect.adjusted(0, 0, -1, -1))
            return
        super().drawRow(painter, option, index)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        model = self.model()
        text = self.placeholder
        if model is not None and model.rowCount() == 0 and isinstance(model, LayerFilterProxy) \
                and model.query:
            text = "No layer matches this search."
        if text and (model is None or model.rowCount() == 0):
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.viewport().rect().adjusted(12, 12, -12, -12),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)
            painter.end()


class LayerTreePane(QWidget):
    """Search box + layer tree of one model of the workspace, in the role "base" or "zoo".

    Parameters: workspace; role; name - the model's workspace name (None for a base pane, which
    always shows ``workspace.base``). The pane follows the workspace: a reloaded model replaces
    the tree, a removed one shows the empty state. Signals: ``dropHint(str, bool)`` from the
    tree (route it to the status bar; "" means clear); ``currentLayerChanged()`` - the
    selected row changed (see :meth:`selected_layer`).
    """

    dropHint = Signal(str, bool)
    currentLayerChanged = Signal()

    def __init__(self, workspace: Workspace, role: str, name: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if role not in ("base", "zoo"):
            raise ValueError(f"role must be 'base' or 'zoo', got {role!r}")
        self._ws = workspace
        self.name = name
        self.role = role
        self.entry: ModelEntry | None = None
        self.model: QtLayerTreeModel | None = None
        self.proxy = LayerFilterProxy(self)

        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        # wraps: on one line its text set the pane's minimum width (about 350 px), so a
        # narrower window could not take any width from the base tree
        self.title.setWordWrap(True)
        self.output_choice = OutputChoice(workspace, role, self)  # models with several outputs
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search name or shape (e.g. conv1, 64x32)")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Filter layers by path (substring) or by tensor shape "
                               "(\u201c64x32\u201d, \u201c64, 32\u201d)")
        self._search_timer = QTimer(self)  # debounce: re-filter once typing pauses
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(150)
        self._search_timer.timeout.connect(self._apply_search)
        self.search.textChanged.connect(self._search_timer.start)
        self.search.returnPressed.connect(self._apply_search)

        self.view = LayerTreeView(role, self)
        self.view.setModel(self.proxy)
        self.view.dropHint.connect(self.dropHint)
        self.view.menuRequested.connect(self._context_menu)
        # The proxy stays for the pane's life (models come and go behind it): connect once.
        self.view.selectionModel().currentRowChanged.connect(self.currentLayerChanged)
        self.view.selectionModel().selectionChanged.connect(self.currentLayerChanged)

        # Columns are fitted to the pane until the user sizes one: a fit made before the pane
        # had its width (a model opened with the window) left names a hundred pixels wide.
        self._fitting = False
        self._user_sized = False
        self.view.header().sectionResized.connect(self._on_section_resized)
        self.view.viewport().installEventFilter(self)
        # ... and refitted when names grow: a step's marker ("1 \u00b7 linear \u2192 layers.1",
        # in bold) or an expanded block's deeper rows were cut to "1 \u00b7 linear \u2192 \u2026"
        self._refit_timer = QTimer(self)  # one refit per burst of changes
        self._refit_timer.setSingleShot(True)
        self._refit_timer.setInterval(0)
        self._refit_timer.timeout.connect(self._refit)
        self.proxy.dataChanged.connect(self._refit_soon)
        self.view.expanded.connect(self._refit_soon)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(3)
        layout.addWidget(self.title)
        layout.addWidget(self.output_choice)
        layout.addWidget(self.search)
        layout.addWidget(self.view, 1)
        QWidget.setTabOrder(self.search, self.view)  # as on screen (the view was made first)

        workspace.modelsChanged.connect(self._on_models_changed)
        self._on_models_changed()

    def _resolve(self) -> ModelEntry | None:
        if self.name is None:
            return self._ws.base if self.role == "base" else None
        return self._ws.entry(self.name, self.role)

    @Slot()
    def _on_models_changed(self) -> None:
        entry = self._resolve()
        if self._filled_in(entry):
            self.entry = entry
            self._show_title(entry)
        elif entry is not self.entry or (entry is not None and self.model is None):
            self.set_entry(entry)
        self.output_choice.set_entry(entry)  # also puts back a pick that did not happen

    def _filled_in(self, entry: ModelEntry | None) -> bool:
        """``entry`` is the shown model, loaded now that its weights are read, and the tree
        model took its statistics in place (rows, expansion and selection kept)."""
        shown = self.entry
        return (entry is not None and shown is not None and entry is not shown
                and not shown.weights_read and entry.path_text == shown.path_text
                and self.model is not None and self.model.fill_in(entry.tree))

    # -- content ---------------------------------------------------------------------------------
    def set_entry(self, entry: ModelEntry | None) -> None:
        """Show ``entry``'s layer tree (None shows the empty state)."""
        self.output_choice.set_entry(entry)
        if entry is self.entry and self.model is not None:
            return
        old = self.model
        self.entry = entry
        if entry is None:
            self.model = None
            self.proxy.setSourceModel(None)
            self.title.setText("<b>Base model</b>" if self.role == "base" else "<b>Zoo model</b>")
            self.view.placeholder = ("No base model loaded.\nOpen one with File \u25b8 Open "
                                     "Base Model." if self.role == "base"
                                     else f"Zoo model {self.name or ''} is not loaded.")
        else:
            self.model = QtLayerTreeModel(entry.tree, self.role, entry.name, self._ws, self)
            self.model.dropHint.connect(self.dropHint)
            self.proxy.setSourceModel(self.model)
            self._show_title(entry)
            self.view.placeholder = ""
            self._user_sized = False  # another model: fitted afresh
            with self._sizing():
                self._setup_columns()
            self.expand_default()
            self._fit_columns()
        if old is not None:
            old.deleteLater()
        self.view.viewport().update()

    def _show_title(self, entry: ModelEntry) -> None:
        n_layers = sum(1 for n in entry.tree.root.walk() if n.layer is not None)
        reading = "" if entry.weights_read else " \u00b7 reading the weights\u2026"
        self.title.setText(
            f"<b>{entry.name}</b> &nbsp;<span style='color:gray'>{self.role} \u00b7 "
            f"{entry.tree.total_params:,} parameters \u00b7 {n_layers} weight layers"
            f"{reading}</span>")
        self.title.setToolTip(entry.path_text or "in memory")

    def _setup_columns(self) -> None:
        header = self.view.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in ((COL_NAME, 220), (COL_SHAPE, 100), (COL_PARAMS, 72),
                           (COL_SPACE, 230), (COL_STATS, 200)):
            header.resizeSection(col, width)

    @Slot(int, int, int)
    def _on_section_resized(self, col: int, _old: int, _new: int) -> None:
        header = self.view.header()
        if header.stretchLastSection() and header.visualIndex(col) == header.count() - 1:
            return  # the stretched last column follows the pane's width, not the user
        if not self._fitting:
            self._user_sized = True  # the user's widths stay

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Resize and watched is self.view.viewport():
            self._refit()
        return False

    def _refit_soon(self, *_args: object) -> None:
        self._refit_timer.start()

    @Slot()
    def _refit(self) -> None:
        if self.model is not None and not self._user_sized:
            self._fit_columns()

    @contextmanager
    def _sizing(self) -> Iterator[None]:
        """Column widths set here are the pane's, not the user's. Re-entrant: a fit can resize
        the viewport (a scroll bar comes or goes), whose resize event fits again inside it."""
        outer, self._fitting = self._fitting, True
        try:
            yield
        finally:
            self._fitting = outer

    def _fit_columns(self) -> None:
        """Shape and parameters as wide as their contents, names as wide as they need up to
        360 px, and all three in sight in a narrow pane (the default layout gives the base pane
        about 340 px: with fixed widths its parameter column read 'Par')."""
        with self._sizing():
            header = self.view.header()
            for col, cap in ((COL_SHAPE, 130), (COL_PARAMS, 100)):
                # + 10: a layer used by a step is drawn in bold, after this fit
                header.resizeSection(col, min(max(self.view.sizeHintForColumn(col) + 10,
                                                  header.sectionSizeHint(col)), cap))
            self.view.resizeColumnToContents(COL_NAME)
            room = self.view.viewport().width() - header.sectionSize(COL_SHAPE) \
                - header.sectionSize(COL_PARAMS) - 4
            header.resizeSection(COL_NAME, min(max(header.sectionSize(COL_NAME) + 40, 120),
                                               max(room, 120), 360))

    def expand_default(self) -> None:
        """Expand the tree, leaving repeated blocks collapsed; big trees only near the top."""
        budget = [_AUTO_EXPAND_ROWS]

        def walk(parent: QModelIndex, depth: int) -> None:
            rows = self.proxy.rowCount(parent)
            budget[0] -= rows
            for r in range(rows):
                index = self.proxy.index(r, 0, parent)
                if not self.proxy.hasChildren(index):
                    continue
                if index.data(REPEAT_ROLE):
                    self.view.collapse(index)
                    continue
                if budget[0] <= 0 and depth > 0:
                    continue
                if not self.proxy.query and not index.data(HAS_MODULES_ROLE):
                    continue  # a module's own tensors stay folded unless searching
                self.view.expand(index)
                walk(index, depth + 1)

        walk(QModelIndex(), 0)

    @Slot()
    def _apply_search(self) -> None:
        self._search_timer.stop()
        self.proxy.set_query(self.search.text())
        if self.proxy.query:
            self.view.expandAll()
        else:
            self.view.collapseAll()
            self.expand_default()

    # -- keyboard/mouse alternative to dragging ---------------------------------------------------
    def merge_targets(self, path: str) -> list[tuple[str, bool, str]]:
        """(base layer, fits, case text or reason) for merging zoo layer ``path`` into each
        weight layer of the base, in model order (empty without a base or for a base pane)."""
        base = self._ws.base
        if self.role != "zoo" or self.entry is None or base is None:
            return []
        out = []
        for node in base.tree.root.walk():
            if node.layer is not None:
                check = self._ws.check(self.entry.name, path, node.path)
                out.append((node.path, check.ok, check.case_text if check.ok else check.reason))
        return out

    def add_step_into(self, path: str, base_layer: str) -> bool:
        """Add the step "zoo layer ``path`` -> ``base_layer``" (undoable, through
        ``Workspace.add_step``); False if it does not fit (the reason goes out through
        ``dropHint``)."""
        if self.entry is None:
            return False
        added = self._ws.add_step(AssemblyStep(self.entry.name, path, base_layer))
        self.dropHint.emit(added.message, added.ok)
        return added.ok

    def selected_layer(self) -> str | None:
        """The path of the selected row when it is a weight layer (what Add Step uses)."""
        index = self.view.currentIndex()
        if self.model is None or not index.isValid() or \
                not self.view.selectionModel().isRowSelected(index.row(), index.parent()):
            return None
        first = index.siblingAtColumn(0)
        return str(first.data(PATH_ROLE)) if first.data(IS_LAYER_ROLE) else None

    def context_menu(self, index: QModelIndex) -> QMenu | None:
        """The context menu of row ``index`` (None for no row); its first entry names the row."""
        if not index.isValid() or self.model is None:
            return None
        path = str(index.siblingAtColumn(0).data(PATH_ROLE) or "")
        menu = QMenu(self)
        title = menu.addAction(path or (self.entry.name if self.entry else ""))
        title.setEnabled(False)  # says which row the menu acts on
        menu.addSeparator()
        copy = menu.addAction("Copy path")
        copy.triggered.connect(lambda: QApplication.clipboard().setText(path))
        if self.role == "zoo" and index.siblingAtColumn(0).data(IS_LAYER_ROLE):
            sub = menu.addMenu("Merge into base layer")
            targets = self.merge_targets(path)
            if not targets:
                sub.setEnabled(False)
                sub.setToolTip("Load a base model first")
            for base_layer, ok, text in targets:
                action = sub.addAction(base_layer)
                action.setEnabled(ok)
                action.setStatusTip(text)
                action.setToolTip(text)
                action.triggered.connect(
                    lambda _=False, b=base_layer: self.add_step_into(path, b))
            sub.setToolTipsVisible(True)
        menu.addSeparator()
        expand = menu.addAction("Expand all")
        expand.triggered.connect(self.view.expandAll)
        collapse = menu.addAction("Collapse all")
        collapse.triggered.connect(self.view.collapseAll)
        return menu

    @Slot(QModelIndex, QPoint)
    def _context_menu(self, index: QModelIndex, where: QPoint) -> None:
        menu = self.context_menu(index)
        if menu is not None:
            # Not exec(): a nested event loop blocks everything behind a menu the user may
            # simply leave; the menu deletes itself when it closes.
            menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            menu.popup(where)

    # -- helpers for tests and the shell ---------------------------------------------------------
    def proxy_index(self, path: str) -> QModelIndex:
        """The view (proxy) index of module ``path``; invalid when filtered out or unknown."""
        if self.model is None:
            return QModelIndex()
        return self.proxy.mapFromSource(self.model.index_of(path))

    def select(self, path: str) -> None:
        """Select and reveal module ``path``."""
        index = self.proxy_index(path)
        if index.isValid():
            self.view.scrollTo(index)
            self.view.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                | QItemSelectionModel.SelectionFlag.Rows)


class ZooTabs(QTabWidget):
    """One LayerTreePane per zoo model, kept in step with ``workspace.zoo`` (tab order = load
    order). Signals: ``dropHint(str, bool)`` (forwarded from every pane);
    ``currentLayerChanged()`` - another tab, or another row in the current one.
    """

    dropHint = Signal(str, bool)
    currentLayerChanged = Signal()

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ws = workspace
        self.currentChanged.connect(self.currentLayerChanged)
        self.setDocumentMode(True)
        self.setMovable(True)
        self.panes: dict[str, LayerTreePane] = {}
        self._empty = QLabel("No zoo models loaded.\nAdd some with File \u25b8 Add Zoo Models, "
                             "or build the demo zoo.")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setEnabled(False)
        workspace.modelsChanged.connect(self.sync)
        self.sync()

    @Slot()
    def sync(self) -> None:
        """Add panes for new zoo models and drop the panes of removed ones."""
        for name in [n for n in self.panes if n not in self._ws.zoo]:
            pane = self.panes.pop(name)
            self.removeTab(self.indexOf(pane))
            pane.deleteLater()
        for position, (name, entry) in enumerate(self._ws.zoo.items()):
            if name not in self.panes:
                pane = LayerTreePane(self._ws, "zoo", name, self)
                pane.dropHint.connect(self.dropHint)
                pane.currentLayerChanged.connect(self.currentLayerChanged)
                self.panes[name] = pane
                # At its place in the zoo: a model brought back by undo returns where it was.
                self.insertTab(position, pane, name)
            self.setTabToolTip(self.indexOf(self.panes[name]), entry.path_text or "in memory")
        empty_at = self.indexOf(self._empty)
        if self.panes and empty_at >= 0:
            self.removeTab(empty_at)
        elif not self.panes and empty_at < 0:
            self.addTab(self._empty, "Zoo")

    def current_pane(self) -> LayerTreePane | None:
        """The pane of the zoo model shown now (None when there is none)."""
        pane = self.currentWidget()
        return pane if isinstance(pane, LayerTreePane) else None
