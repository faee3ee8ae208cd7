"""QtLayerTreeModel: a QAbstractItemModel adapting a core LayerTree (read-only, lazy).

Rows are the model's modules (LayerNode) and, under each, its state tensors (TensorInfo).
Columns: name, shape, parameters, permutation space, stats; what each says is worded by
:class:`~mal_desktop.gui.models.layer_text.LayerText`. Weight layers (``node.layer`` set) of a
zoo model can be dragged, and so can blocks, modules holding layers (MIME
"application/x-mal-layer", JSON payload); the base model's rows accept such drops:
``canDropMimeData`` asks the workspace (its cached core pre-flight check) whether the step fits
and emits ``dropHint(text, ok)``; ``dropMimeData`` adds the step through ``Workspace.add_step``
(a block's steps through ``Workspace.add_steps``, one undoable edit). Children are materialised
on first request, so a large model costs nothing until it is expanded. Repeated sibling blocks
(same ``repeat`` signature) are labelled "(x2 alike)" and flagged with REPEAT_ROLE so views
start them collapsed. A tree from a model's headers is filled in with its statistics once the
weights are read (:meth:`QtLayerTreeModel.fill_in`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from PySide6.QtCore import (QAbstractItemModel, QMimeData, QModelIndex, QObject,
                            QPersistentModelIndex, Qt, Signal)
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

from ...core.merge.plan import AssemblyStep, PlanChange
from ..workspace import fit_text, replaced_text
from .glyphs import group_icon, layer_icon, lock_icon, tensor_icon
from .layer_text import (COL_NAME, COL_PARAMS, COL_SHAPE, COL_SPACE, COL_STATS, COLUMN_TIPS,
                         COLUMNS, LayerText)
from .mime import LAYER_MIME, LayerRef, decode_layer, encode_layer
from .plan_model import subscribe_weakly

if TYPE_CHECKING:
    from ...core.graph.tree import LayerNode, LayerTree, TensorInfo
    from ..workspace import Workspace

PATH_ROLE = Qt.ItemDataRole.UserRole + 10  # str: module path or state key
IS_LAYER_ROLE = Qt.ItemDataRole.UserRole + 11  # bool: a draggable / droppable weight layer
REPEAT_ROLE = Qt.ItemDataRole.UserRole + 12  # int: size of the identical-sibling group, or 0
SEARCH_ROLE = Qt.ItemDataRole.UserRole + 13  # str: what the search box matches against
FIXED_ROLE = Qt.ItemDataRole.UserRole + 14  # bool: the row has a fixed axis
HAS_MODULES_ROLE = Qt.ItemDataRole.UserRole + 15  # bool: the row has child modules

Index = QModelIndex | QPersistentModelIndex


@dataclass
class _Item:
    """One row: a module node, or a tensor of ``owner``; children built on first request.
    (A :class:`~mal_desktop.gui.models.layer_text.Row`: LayerText words it.)"""

    parent: int  # item id of the parent row, -1 at top level
    row: int
    node: "LayerNode | None" = None
    tensor: "TensorInfo | None" = None
    owner: "LayerNode | None" = None
    name: str = ""
    repeat_count: int = 0  # size of the group of identical siblings (0: not repeated)
    repeat_first: str = ""  # name of the group's first member
    children: list[int] | None = field(default=None, repr=False)


def _leaf(path: str, parent_path: str) -> str:
    if parent_path and path.startswith(parent_path + "."):
        return path[len(parent_path) + 1:]
    return path


class QtLayerTreeModel(QAbstractItemModel):
    """Adapter of a core ``LayerTree`` for a QTreeView.

    Parameters: tree - the layer tree; role - "zoo" (rows drag) or "base" (rows accept drops);
    model_name - the workspace name of the model (the MIME payload and the plan use it);
    workspace - needed for drops (preflight checks, undo stack) and to mark layers used by steps.
    Signals: ``dropHint(str text, bool ok)`` - what a hovered drop would do, or why it is refused.
    """

    dropHint = Signal(str, bool)

    def __init__(self, tree: "LayerTree", role: str, model_name: str | None = None,
                 workspace: "Workspace | None" = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        if role not in ("zoo", "base"):
            raise ValueError(f"role must be 'zoo' or 'base', got {role!r}")
        self.tree = tree
        self.role = role
        self.model_name = model_name or tree.model_name
        self._ws = workspace
        self.text = LayerText(tree.spec, role, self.model_name, tree.has_stats, tree.tied)
        self._items: list[_Item] = []
        self._top: list[int] | None = None
        self._by_path: dict[str, int] = {}  # node path -> item id (materialised rows only)
        self._used: dict[str, list[int]] = {}  # layer path -> step numbers using it
        self._blocks = _block_paths(tree)
        self._last_hint: tuple[str, bool] | None = None
        if workspace is not None:
            self._listener = subscribe_weakly(workspace.plan, self, "_on_plan_change")
            self._recompute_used()

    def fill_in(self, tree: "LayerTree") -> bool:
        """Show ``tree`` - the same model's tree once its weights are read - in place of the
        one from its headers: the rows stay (with what the view expanded and selected) and
        the statistics column repaints. Returns False, changing nothing, when the layouts
        differ (the caller then builds a new model)."""
        if not tree.same_layout(self.tree):
            return False
        self.tree = tree
        self.text = LayerText(tree.spec, self.role, self.model_name, tree.has_stats,
                              tree.tied)
        self._blocks = _block_paths(tree)
        for item in self._items:
            if item.node is not None:
                item.node = tree.find(item.node.path)
            else:
                item.owner = tree.find(item.owner.path) if item.owner is not None else None
                item.tensor = next(t for t in item.owner.tensors if t.key == item.tensor.key)
        parents = ([-1] if self._top is not None else []) + [
            i for i, item in enumerate(self._items) if item.children]
        for parent in parents:
            rows = self._children_of(parent)
            top = QModelIndex() if parent < 0 else \
                self.createIndex(self._items[parent].row, 0, parent)
            self.dataChanged.emit(self.index(0, COL_STATS, top),
                                  self.index(len(rows) - 1, COL_STATS, top))
        return True

    # -- lazy structure ------------------------------------------------------------------------
    def _children_of(self, item_id: int) -> list[int]:
        if item_id < 0:
            if self._top is None:
                self._top = self._make_children(-1, self.tree.root)
            return self._top
        item = self._items[item_id]
        if item.children is None:
            item.children = self._make_children(item_id, item.node) if item.node else []
        return item.children

    def _make_children(self, parent_id: int, node: "LayerNode") -> list[int]:
        ids: list[int] = []
        groups: dict[str, list[int]] = {}
        for child in node.children:
            item = _Item(parent_id, len(ids), node=child, name=_leaf(child.path, node.path))
            self._items.append(item)
            ids.append(len(self._items) - 1)
            self._by_path[child.path] = ids[-1]
            if child.repeat:
                groups.setdefault(child.repeat, []).append(ids[-1])
        for members in groups.values():
            if len(members) > 1:
                first = self._items[members[0]].name
                for m in members:
                    self._items[m].repeat_count = len(members)
                    self._items[m].repeat_first = first
        for t in node.tensors:
            item = _Item(parent_id, len(ids), tensor=t, owner=node, name=t.key.rsplit(".", 1)[-1])
            self._items.append(item)
            ids.append(len(self._items) - 1)
        return ids

    def _item(self, index: Index) -> _Item | None:
        if not index.isValid():
            return None
        return self._items[index.internalId()]

    def node_at(self, index: Index) -> "LayerNode | None":
        """The module node of a row (None for tensor rows and invalid indexes)."""
        item = self._item(index)
        return item.node if item is not None else None

    def index_of(self, path: str, column: int = 0) -> QModelIndex:
        """The index of the module with ``path`` (materialising its ancestors); invalid if none."""
        parts = path.split(".")
        parent = QModelIndex()
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            self.rowCount(parent)  # materialise this level
            item_id = self._by_path.get(prefix)
            if item_id is None:
                continue  # a module path may skip levels ("features.0" under "features")
            parent = self.createIndex(self._items[item_id].row, 0, item_id)
        item_id = self._by_path.get(path)
        if item_id is None:
            return QModelIndex()
        return self.createIndex(self._items[item_id].row, column, item_id)

    # -- Qt model API: structure ----------------------------------------------------------------
    def index(self, row: int, column: int, parent: Index = QModelIndex()) -> QModelIndex:  # noqa: B008
        if column < 0 or column >= len(COLUMNS) or row < 0:
            return QModelIndex()
        if parent.isValid() and parent.column() != 0:
            return QModelIndex()
        children = self._children_of(parent.internalId() if parent.isValid() else -1)
        if row >= len(children):
            return QModelIndex()
        return self.createIndex(row, column, children[row])

    def parent(self, index: Index = QModelIndex()) -> QModelIndex:  # type: ignore[override]  # noqa: B008
        item = self._item(index)
        if item is None or item.parent < 0:
            return QModelIndex()
        return self.createIndex(self._items[item.parent].row, 0, item.parent)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self._children_of(parent.internalId() if parent.isValid() else -1))

    def hasChildren(self, parent: Index = QModelIndex()) -> bool:  # noqa: N802, B008
        # Answer without materialising: views ask this for every visible row.
        if not parent.isValid():
            return bool(self.tree.root.children or self.tree.root.tensors)
        if parent.column() != 0:
            return False
        item = self._items[parent.internalId()]
        return item.node is not None and bool(item.node.children or item.node.tensors)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMN_TIPS[section]
        return None

    # -- Qt model API: data ---------------------------------------------------------------------
    def _weight(self, node: "LayerNode") -> "TensorInfo | None":
        if node.layer is None:
            return None
        return next((t for t in node.tensors if t.key == node.layer.weight), None)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        item = self._item(index)
        if item is None:
            return None
        col = index.column()
        node = item.node
        tensor = item.tensor if node is None else self._weight(node)
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text.display(item, col, tensor, self._used)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.text.tooltip(item, col, tensor, self._used)
        if role == Qt.ItemDataRole.DecorationRole:
            return self._decoration(item, col, tensor)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == COL_SPACE and tensor is not None and self.text.fixed_axes(tensor):
                return QColor("#b26a00") if not _dark() else QColor("#f0b35e")
            if col == COL_STATS or (node is None and col != COL_NAME):
                return QApplication.palette().color(QPalette.ColorRole.PlaceholderText)
            return None
        if role == Qt.ItemDataRole.FontRole:
            if node is not None and node.path in self._used:
                font = QFont()
                font.setBold(True)
                return font
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and col == COL_PARAMS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == PATH_ROLE:
            return node.path if node is not None else item.tensor.key if item.tensor else ""
        if role == IS_LAYER_ROLE:
            return node is not None and node.layer is not None
        if role == REPEAT_ROLE:
            return item.repeat_count
        if role == HAS_MODULES_ROLE:
            return node is not None and bool(node.children)
        if role == FIXED_ROLE:
            return tensor is not None and bool(self.text.fixed_axes(tensor))
        if role == SEARCH_ROLE:
            path = node.path if node is not None else item.tensor.key if item.tensor else ""
            shape = tuple(tensor.shape) if tensor is not None else ()
            return path.lower() + "\n" + "x".join(str(int(s)) for s in shape)
        return None

    def _decoration(self, item: _Item, col: int, tensor: "TensorInfo | None") -> Any:
        if QApplication.instance() is None:
            return None  # pixmaps need a GUI application (a headless use of the model)
        palette = QApplication.palette()
        if col == COL_NAME:
            node = item.node
            if node is None:
                return tensor_icon(palette.color(QPalette.ColorRole.PlaceholderText))
            if node.layer is not None:
                letter = "C" if node.layer.kind.startswith("conv") else "L"
                color = QColor("#0072b2" if self.role == "zoo" else "#009e73")
                return layer_icon(letter, color)
            return group_icon(palette.color(QPalette.ColorRole.PlaceholderText))
        if col == COL_SPACE and tensor is not None and self.text.fixed_axes(tensor):
            return lock_icon(QColor("#b26a00") if not _dark() else QColor("#f0b35e"))
        return None

    # -- drag ------------------------------------------------------------------------------------
    def flags(self, index: Index) -> Qt.ItemFlag:
        item = self._item(index)
        if item is None:
            return Qt.ItemFlag.ItemIsDropEnabled if self.role == "base" else \
                Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if item.node is None:
            flags |= Qt.ItemFlag.ItemNeverHasChildren
        is_layer = item.node is not None and item.node.layer is not None
        is_block = item.node is not None and item.node.path in self._blocks
        if (is_layer or is_block) and self.role == "zoo":
            flags |= Qt.ItemFlag.ItemIsDragEnabled
        if self.role == "base":
            flags |= Qt.ItemFlag.ItemIsDropEnabled  # every row answers, with a reason if refused
        return flags

    def mimeTypes(self) -> list[str]:  # noqa: N802
        return [LAYER_MIME]

    def supportedDragActions(self) -> Qt.DropAction:  # noqa: N802
        return Qt.DropAction.CopyAction

    def supportedDropActions(self) -> Qt.DropAction:  # noqa: N802
        return Qt.DropAction.CopyAction if self.role == "base" else Qt.DropAction.IgnoreAction

    def layer_ref(self, index: Index) -> LayerRef | None:
        """The drag payload of a weight-layer row, or of a block holding weight layers (kind
        "block"); None for other rows."""
        node = self.node_at(index.siblingAtColumn(0) if index.isValid() else index)
        if node is not None and node.layer is None and node.path in self._blocks:
            return LayerRef(self.model_name, self.role, node.path, BLOCK_KIND)
        if node is None or node.layer is None:
            return None
        weight = self._weight(node)
        return LayerRef(self.model_name, self.role, node.path, node.layer.kind,
                        tuple(int(s) for s in weight.shape) if weight is not None else ())

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData | None:  # noqa: N802
        for index in indexes:
            ref = self.layer_ref(index)
            if ref is not None:
                return encode_layer(ref)
        return None

    # -- drop ------------------------------------------------------------------------------------
    def evaluate_drop(self, data: QMimeData | None, row: int, parent: Index
                      ) -> tuple[bool, str, list[AssemblyStep]]:
        """Would dropping ``data`` on (row, parent) add steps? (ok, hint text, the steps: one
        for a layer, one per layer for a block)."""
        ref = decode_layer(data)
        if ref is None:
            return False, "Only layers dragged from a zoo model can be dropped here.", []
        if self.role != "base":
            return False, "Drop zoo layers on the base model.", []
        if ref.role != "zoo":
            return False, "Drag layers from a zoo model (the base cannot merge into itself).", []
        target = self._drop_target(row, parent)
        node = self.node_at(target.siblingAtColumn(0) if target.isValid() else target)
        if self._ws is None:
            return False, "No workspace to add steps to.", []
        if ref.kind == BLOCK_KIND:
            return self._evaluate_block_drop(ref, node)
        if node is None or node.layer is None:
            where = self.data(target.siblingAtColumn(0), PATH_ROLE) if target.isValid() else ""
            return False, (f"{where} is not a weight layer: drop onto a linear or conv layer."
                           if where else "Drop onto a linear or conv layer of the base."), []
        step = AssemblyStep(source=ref.model, source_layer=ref.layer, base_layer=node.path)
        check = self._ws.check_new_step(step)  # cached in the workspace: hovers ask often
        return check.ok, fit_text(step, check), [step] if check.ok else []

    def _drop_target(self, row: int, parent: Index) -> Index:
        """The row a drop on (row, parent) lands on (Qt passes row -1 for "onto parent")."""
        return parent if row < 0 else self.index(row, 0, parent)

    def _evaluate_block_drop(self, ref: LayerRef, node: "LayerNode | None"
                             ) -> tuple[bool, str, list[AssemblyStep]]:
        """A zoo block onto a base block: one step per layer of the same name, each checked."""
        from ...core.errors import PlanError
        from ...core.merge.blocks import block_steps

        name = f"block {ref.model}:{ref.layer}"
        if node is None or node.path not in self._blocks:
            return False, f"Drop {name} onto a block of the base (a module holding layers).", []
        donor = self._ws.zoo.get(ref.model)
        if donor is None:
            return False, f"Zoo model {ref.model} is not loaded.", []
        try:
            steps = block_steps(ref.model, donor.tree.spec, ref.layer, self.tree.spec, node.path)
        except PlanError as exc:
            return False, f"Cannot merge {name} into {node.path}: {exc}", []
        for step in steps:
            check = self._ws.check_plan_step(step)
            if not check.ok:
                return False, (f"Cannot merge {name} into {node.path}: its layer "
                               f"{step.source_layer}: {check.reason}"), []
        with_norms = [step for step in steps if step.norms]
        norms = "".join(
            f"; its norms {', '.join(b.rsplit('.', 1)[-1] for _, b in step.norms)} merge with "
            f"{step.base_layer.rsplit('.', 1)[-1]}" for step in with_norms)
        replaced = replaced_text(self._ws.replaced_by(steps))
        note = self._ws.check_plan_step(steps[0]).note if steps else ""
        return True, (f"{name} \u2192 {node.path}: {len(steps)} steps, one per layer"
                      f"{norms}{replaced}" + (f" \u2014 note: {note}" if note else "")), steps

    def _hint(self, text: str, ok: bool) -> None:
        # Hover calls this on every mouse move: only tell the status bar about changes.
        if self._last_hint != (text, ok):
            self._last_hint = (text, ok)
            self.dropHint.emit(text, ok)

    def canDropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int,  # noqa: N802
                        column: int, parent: Index) -> bool:
        ok, text, _steps = self.evaluate_drop(data, row, parent)
        self._hint(text, ok)
        return ok

    def dropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int,  # noqa: N802
                     column: int, parent: Index) -> bool:
        if action == Qt.DropAction.IgnoreAction:
            return True
        ok, text, steps = self.evaluate_drop(data, row, parent)
        self._last_hint = None
        if not ok or not steps or self._ws is None:
            self._hint(text, False)
            return False
        ref = decode_layer(data)
        if ref is not None and ref.kind == BLOCK_KIND:  # a block: its steps are one edit
            target = self._drop_target(row, parent).siblingAtColumn(0)
            added = self._ws.add_steps(steps, f"block {ref.model}:{ref.layer} \u2192 "
                                              f"{self.data(target, PATH_ROLE) or ''}")
        else:
            added = self._ws.add_step(steps[0])
        self._hint(added.message, added.ok)
        return added.ok

    def end_drag(self) -> None:
        """Forget the last hint (the drag left or ended) so the next hover reports again."""
        self._last_hint = None

    # -- plan events: mark layers used by steps --------------------------------------------------
    def _recompute_used(self) -> dict[str, list[int]]:
        used: dict[str, list[int]] = {}
        if self._ws is not None:
            for n, step in enumerate(self._ws.plan.steps, start=1):
                if self.role == "base":
                    used.setdefault(step.base_layer, []).append(n)
                elif step.source == self.model_name:
                    used.setdefault(step.source_layer, []).append(n)
        old, self._used = self._used, used
        return old

    def _on_plan_change(self, _change: PlanChange) -> None:
        old = self._recompute_used()
        for path in set(old) | set(self._used):
            if old.get(path) != self._used.get(path) and path in self._by_path:
                item_id = self._by_path[path]
                row = self._items[item_id].row
                self.dataChanged.emit(self.createIndex(row, 0, item_id),
                                      self.createIndex(row, 0, item_id),
                                      [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.FontRole,
                                       Qt.ItemDataRole.ToolTipRole])


BLOCK_KIND = "block"  # LayerRef.kind of a dragged block


def _block_paths(tree: "LayerTree") -> frozenset[str]:
    """The tree's rows that can be dragged as a block (core.merge.blocks.block_modules)."""
    from ...core.merge.blocks import block_modules

    return frozenset(p for p in block_modules(tree.spec) if tree.find(p) is not None)


def _dark() -> bool:
    return QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


__all__ = ["COLUMNS", "COL_NAME", "COL_PARAMS", "COL_SHAPE", "COL_SPACE", "COL_STATS",
           "FIXED_ROLE", "HAS_MODULES_ROLE", "IS_LAYER_ROLE", "PATH_ROLE", "REPEAT_ROLE",
           "SEARCH_ROLE", "QtLayerTreeModel"]
