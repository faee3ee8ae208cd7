"""Undo commands for every edit of the assembly plan.

The plan (core/merge/plan.py) is a headless document; the GUI never edits it directly but pushes
one of these commands on the workspace's ``QUndoStack``. Each command stores whole
:class:`AssemblyStep` values (immutable) rather than diffs, so undo restores exactly what was
there. Continuous edits (a lambda slider drag, a spin box held down) share a *gesture* id and
merge into one command via ``id()``/``mergeWith``.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from PySide6.QtGui import QUndoCommand

from ..core.merge.plan import AssemblyPlan, AssemblyStep

# Command ids for QUndoStack merging; -1 (Qt's default) means "never merge".
_UPDATE_ID = 0x4D41  # "MA"

_gestures = itertools.count(1)


def new_gesture() -> int:
    """A fresh gesture id: edits pushed with the same id merge into one undo command."""
    return next(_gestures)


def _short(step: AssemblyStep) -> str:
    return f"{step.source}:{step.source_layer} \u2192 {step.base_layer}"


class AddStepCommand(QUndoCommand):
    """Insert ``step`` at ``index`` (default: append)."""

    def __init__(self, plan: AssemblyPlan, step: AssemblyStep, index: int | None = None,
                 parent: QUndoCommand | None = None) -> None:
        super().__init__(f"Add step {_short(step)}", parent)
        self._plan = plan
        self._step = step
        self._index = len(plan.steps) if index is None else max(0, min(index, len(plan.steps)))

    @property
    def index(self) -> int:
        """Where the step is inserted."""
        return self._index

    def redo(self) -> None:
        self._plan.insert_step(self._index, self._step)

    def undo(self) -> None:
        self._plan.remove_step(self._index)


class RemoveStepCommand(QUndoCommand):
    """Remove the step at ``index``; undo puts the same step back in the same place."""

    def __init__(self, plan: AssemblyPlan, index: int, parent: QUndoCommand | None = None) -> None:
        if not 0 <= index < len(plan.steps):
            raise IndexError(f"no step {index + 1} in the plan ({len(plan.steps)} steps)")
        self._plan = plan
        self._index = index
        self._step = plan.steps[index]
        super().__init__(f"Remove step {_short(self._step)}", parent)

    def redo(self) -> None:
        self._plan.remove_step(self._index)

    def undo(self) -> None:
        self._plan.insert_step(self._index, self._step)


class MoveStepCommand(QUndoCommand):
    """Move the step at ``index`` to ``to_index`` (positions in the list after the move)."""

    def __init__(self, plan: AssemblyPlan, index: int, to_index: int,
                 parent: QUndoCommand | None = None) -> None:
        n = len(plan.steps)
        if not (0 <= index < n and 0 <= to_index < n):
            raise IndexError(f"cannot move step {index + 1} to {to_index + 1} ({n} steps)")
        direction = "up" if to_index < index else "down"
        super().__init__(f"Move step {_short(plan.steps[index])} {direction}", parent)
        self._plan = plan
        self._index = index
        self._to = to_index

    def redo(self) -> None:
        self._plan.move_step(self._index, self._to)

    def undo(self) -> None:
        self._plan.move_step(self._to, self._index)


_FIELD_NAMES = {"lam": "\u03bb", "align": "alignment", "unmatched": "unmatched policy",
                "method": "merge method", "params": "method parameters"}


class UpdateStepCommand(QUndoCommand):
    """Replace fields of step ``index`` (validated by AssemblyStep); merges within one gesture.

    Parameters: plan, index, changes (AssemblyStep field -> new value), gesture (from
    :func:`new_gesture`; consecutive commands on the same step with the same non-None gesture
    merge, so a slider drag is one undo step), text (undo-history label; derived when omitted).
    Raises PlanError (from AssemblyStep) when a value is invalid, before anything changes.
    """

    def __init__(self, plan: AssemblyPlan, index: int, changes: dict[str, Any],
                 gesture: int | None = None, text: str | None = None,
                 parent: QUndoCommand | None = None) -> None:
        if not 0 <= index < len(plan.steps):
            raise IndexError(f"no step {index + 1} in the plan ({len(plan.steps)} steps)")
        self._plan = plan
        self._index = index
        self._old = plan.steps[index]
        self._new = replace(self._old, **changes)  # validates now, so a bad value never lands
        self._gesture = gesture
        super().__init__(text or self._describe(changes, index), parent)

    @staticmethod
    def _describe(changes: dict[str, Any], index: int) -> str:
        """"Set \u03bb of step 2 to 0.300": which step, since the Edit menu's Undo names it."""
        step = f"step {index + 1}"
        if set(changes) == {"lam"}:
            return f"Set \u03bb of {step} to {float(changes['lam']):.3f}"
        if "method" in changes:
            return f"Set merge method of {step} to {changes['method']}"
        names = [_FIELD_NAMES.get(k, k) for k in changes]
        if len(changes) == 1:
            (key, value), = changes.items()
            if isinstance(value, str):
                return f"Set {_FIELD_NAMES.get(key, key)} of {step} to {value}"
        return f"Change {', '.join(names)} of {step}"

    @property
    def step_index(self) -> int:
        return self._index

    def id(self) -> int:  # noqa: A003 - Qt's name
        return _UPDATE_ID if self._gesture is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if not isinstance(other, UpdateStepCommand):
            return False
        if other._gesture != self._gesture or other._index != self._index:
            return False
        self._new = other._new
        self.setText(other.text())
        # A drag that ends where it started changed nothing: drop it from the history.
        self.setObsolete(self._new == self._old)
        return True

    def redo(self) -> None:
        self._plan.replace_step(self._index, self._new)

    def undo(self) -> None:
        self._plan.replace_step(self._index, self._old)
