"""QtPlanModel: a table model adapting the assembly plan (one row per step).

The core plan emits :class:`PlanChange` events *after* it changed, while Qt wants
``beginInsertRows`` before. So the model keeps its own snapshot of the step list and replays
each change on it between the begin/end calls: views always see a consistent model.
The model is read-only; edits go through undo commands (gui/undo.py).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import shiboken6

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QStyle

from ...core.merge.methods import MERGE_METHODS
from ...core.merge.plan import AssemblyPlan, AssemblyStep, PlanChange, repeated_steps
from ..workspace import Workspace
from ...core.merge.case_words import compact_case, explain_case

STEP_ROLE = Qt.ItemDataRole.UserRole + 1  # the AssemblyStep of a row
CHECK_ROLE = Qt.ItemDataRole.UserRole + 2  # its StepCheck (ok, reason, case_text)

# Two lines per header and per row (model over layer, method over its parameters, one width
# case side per line): every column fits a plan dock a third of a 1280 px window wide.
COLUMNS = ("Step\n(zoo layer)", "Into\n(base)", "\u03bb", "Align", "Method", "Width\ncase")
COL_SOURCE, COL_BASE, COL_LAMBDA, COL_ALIGN, COL_METHOD, COL_CASE = range(6)
# The step number is not model data (it would change for every row below an insertion); views
# draw it (see views/step_list.py), tooltips state it.

_ALIGN_TIPS = {
    "chain": "chain: align every hidden space of the prefix jointly (Git Re-Basin style); "
             "falls back to local when the depths differ",
    "local": "local: two-sided alignment of this layer alone (alternating LAPs)",
    "none": "none: index-aligned merge (truncate or zero-pad), the naive baseline",
}

Index = QModelIndex | QPersistentModelIndex


def subscribe_weakly(plan: AssemblyPlan, obj: QObject, method: str) -> Callable[[PlanChange], None]:
    """Subscribe ``obj.method`` to ``plan`` without keeping ``obj`` alive.

    The plan is a plain Python object that outlives views; a strong subscription would call into
    a deleted C++ object. The listener unsubscribes itself once ``obj`` is gone. Returns it.
    """
    ref = weakref.ref(obj)

    def listener(change: PlanChange) -> None:
        target = ref()
        if target is None or not shiboken6.isValid(target):
            plan.unsubscribe(listener)
            return
        getattr(target, method)(change)

    plan.subscribe(listener)
    return listener


class QtPlanModel(QAbstractTableModel):
    """Rows = steps of ``workspace.plan``; columns = :data:`COLUMNS`."""

    def __init__(self, workspace: Workspace, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ws = workspace
        self._steps: list[AssemblyStep] = list(workspace.plan.steps)
        # row of a step repeating an earlier one's route -> that step's row; kept with the rows
        # (asked for every painted cell: recomputing it there was quadratic in the plan)
        self._repeats = _repeats(self._steps)
        self._listener = subscribe_weakly(workspace.plan, self, "_on_change")
        workspace.modelsChanged.connect(self._on_models_changed)

    def detach(self) -> None:
        """Stop listening to the plan (call before dropping the model)."""
        self._ws.plan.unsubscribe(self._listener)

    # -- change events ----------------------------------------------------------------------
    def _on_change(self, change: PlanChange) -> None:
        before = self._repeats
        self._follow(change)
        self._repeats = _repeats(self._steps)
        if before or self._repeats:  # another row's "again" note may change
            self._on_models_changed()

    def _follow(self, change: PlanChange) -> None:
        plan = self._ws.plan.steps
        if change.kind == "insert":
            i = change.index
            self.beginInsertRows(QModelIndex(), i, i)
            self._steps.insert(i, plan[i])
            self.endInsertRows()
        elif change.kind == "remove":
            i = change.index
            self.beginRemoveRows(QModelIndex(), i, i)
            del self._steps[i]
            self.endRemoveRows()
        elif change.kind == "update":
            i = change.index
            self._steps[i] = plan[i]
            self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
        elif change.kind == "move":
            i, j = change.index, change.to_index
            if i != j:
                # Qt's destination is the row *before which* the moved row lands, counted in the
                # list before the move: moving down therefore targets j + 1.
                self.beginMoveRows(QModelIndex(), i, i, QModelIndex(), j + 1 if j > i else j)
                self._steps.insert(j, self._steps.pop(i))
                self.endMoveRows()
        else:  # "reset", "models", anything new: resynchronise fully
            if change.kind == "models" and len(self._steps) == len(plan):
                self._on_models_changed()
                return
            self.beginResetModel()
            self._steps = list(plan)
            self.endResetModel()

    def _on_models_changed(self) -> None:
        # Loading another base or zoo model changes which steps fit: refresh the case column
        # and the warning icons.
        if self._steps:
            self.dataChanged.emit(self.index(0, 0),
                                  self.index(len(self._steps) - 1, len(COLUMNS) - 1))

    # -- Qt model API -----------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._steps)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return _HEADER_TIPS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | \
            Qt.ItemFlag.ItemNeverHasChildren

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._steps):
            return None
        step = self._steps[index.row()]
        col = index.column()
        if role == STEP_ROLE:
            return step
        if role == CHECK_ROLE:
            return self._ws.check_plan_step(step)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(index.row(), col, step)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(index.row(), col, step)
        if role == Qt.ItemDataRole.DecorationRole and col == COL_SOURCE:
            if not self._ws.check_plan_step(step).ok or self._repeat_of(index.row()) >= 0:
                return QApplication.style().standardIcon(
                    QStyle.StandardPixmap.SP_MessageBoxWarning)
            return None
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_CASE:
            if not self._ws.check_plan_step(step).ok:
                return QApplication.palette().color(QPalette.ColorRole.PlaceholderText)
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and col == COL_LAMBDA:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _display(self, row: int, col: int, step: AssemblyStep) -> str | None:
        if col == COL_SOURCE:
            return f"{step.source}\n{step.source_layer}"
        if col == COL_BASE:  # a block's norms ride with one of its steps: say so
            norms = f"\n+ {len(step.norms)} norm{'s' if len(step.norms) > 1 else ''}"
            return step.base_layer + (norms if step.norms else "")
        if col == COL_LAMBDA:
            return f"{step.lam:.2f}"
        if col == COL_ALIGN:
            return step.align
        if col == COL_METHOD:
            extra = ", ".join(f"{k}={float(v):g}" for k, v in step.params)
            known = MERGE_METHODS.get(step.method)
            label = known.label if known is not None else step.method
            return f"{label}\n{extra}" if extra else label
        if col == COL_CASE:
            check = self._ws.check_plan_step(step)
            if not check.ok:
                return f"\u26a0 {check.reason}"
            # one side per line, in rows and features: what the trees' Shape column shows
            case = compact_case(check.case_text, "\n", counts=False, rows=True)
            first = self._repeat_of(row)
            return f"\u26a0 again (step {first + 1})\n{case}" if first >= 0 else case
        return None

    def _tooltip(self, row: int, col: int, step: AssemblyStep) -> str:
        check = self._ws.check_plan_step(step)
        lines = [f"Step {row + 1}: {step.label}"]
        if step.norms:
            lines.append("With the block's norms, moved by this layer's maps: "
                         + ", ".join(base for _, base in step.norms))
        if check.case_text:
            lines.append(f"Width case: {check.case_text}")
            if check.units:
                lines.append(f"Units: {check.units}")
            if col == COL_CASE:
                lines.append(explain_case(check.case_text))
        if not check.ok:
            lines.append(f"Cannot run: {check.reason}")
        first = self._repeat_of(row)
        if first >= 0:  # a plan file or project can hold one; the app does not add them
            lines.append(f"Step {first + 1} merges the same zoo layer into the same base layer: "
                         "this step merges the merged layer again. Remove one of them.")
        if col == COL_ALIGN:
            lines.append(_ALIGN_TIPS.get(step.align, step.align))
        elif col == COL_METHOD and step.method in MERGE_METHODS:
            lines.append(MERGE_METHODS[step.method].description)
        elif col == COL_LAMBDA:
            lines.append("\u03bb = 0 keeps the base layer; \u03bb = 1 replaces it by the aligned "
                         "zoo layer")
        lines.append(f"Unmatched base units: {step.unmatched}")
        return "\n".join(lines)

    def _repeat_of(self, row: int) -> int:
        """The earlier step with this row's route, -1 for none."""
        return self._repeats.get(row, -1)

    # -- helpers for views ------------------------------------------------------------------
    def step(self, row: int) -> AssemblyStep:
        """The step shown in ``row``."""
        return self._steps[row]


_HEADER_TIPS = (
    "Steps run in this order, each on the base as left by the steps before it; the zoo model "
    "and layer that donates weights",
    "Base layer that receives them (the base never changes shape)",
    "Merging factor: (1 - \u03bb) base + \u03bb aligned zoo layer",
    "Alignment: how zoo units are matched to base units before merging",
    "Merge method and its parameters",
    "Width case per side (out, in): base \u2190 zoo rows (out) and features (in), as the "
    "layer trees' Shape column counts them; pad: the base is wider and its units without a zoo "
    "partner are zero-padded; drop: the base is narrower and the zoo units left over are "
    "dropped; fixed: units that cannot be reordered (the row's tooltip has the numbers and "
    "what a unit is: an attention head moves its rows together)",
)


def _repeats(steps: list[AssemblyStep]) -> dict[int, int]:
    """Row of each step with the route of an earlier one -> the earlier one's row."""
    return {again: first for first, again in repeated_steps(steps)}
