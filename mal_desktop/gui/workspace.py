"""The GUI's session state: loaded models, their layer trees, the assembly plan, the undo stack.

The workspace owns no widgets. Panes and panels read it and edit the plan only by pushing undo
commands on :attr:`Workspace.undo_stack` (gui/undo.py). Loading models is not undoable (it is a
file operation); removing a zoo model also removes its steps, as one undoable command, so the
plan never refers to a model that is silently gone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from ..core.merge.plan import AssemblyPlan, AssemblyStep, PlanChange
from ..core.merge.preflight import StepCheck, check_step
from .undo import RemoveStepsCommand

if TYPE_CHECKING:
    from ..core.graph.tree import LayerTree
    from ..core.io.model import LoadedModel


@dataclass(frozen=True)
class ModelEntry:
    """One loaded model: display name (unique in the workspace), file, model and layer tree."""

    name: str
    path: str | Path | None
    model: "LoadedModel"
    tree: "LayerTree"

    @staticmethod
    def from_model(model: "LoadedModel", name: str | None = None) -> "ModelEntry":
        """Build the entry (and its layer tree) for ``model``; slow for big models (worker).

        Raises whatever ``build_layer_tree`` raises (a MalError for unsupported models).
        """
        from ..core.graph.tree import build_layer_tree  # torch-heavy: import on first use

        return ModelEntry(name or model.name, model.path, model, build_layer_tree(model))

    @property
    def path_text(self) -> str:
        """The file as the plan stores it ("" for a model that only lives in memory)."""
        return str(self.path) if self.path is not None else ""


class Workspace(QObject):
    """Base model, zoo models, the plan and its undo stack, and the selected step.

    Signals: ``modelsChanged()`` after the base or the zoo changed; ``selectedStepChanged(int)``
    with the selected step index (-1 for none).
    """

    modelsChanged = Signal()
    selectedStepChanged = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.base: ModelEntry | None = None
        self.zoo: dict[str, ModelEntry] = {}
        self.plan = AssemblyPlan()
        self.undo_stack = QUndoStack(self)
        self._selected = -1
        self._checks: dict[tuple[str, str, str], StepCheck] = {}
        self.plan.subscribe(self._on_plan_change)

    # -- models ----------------------------------------------------------------------------
    def set_base(self, entry: ModelEntry | None) -> None:
        """Use ``entry`` as the base model (None unloads it). Steps stay; views re-check them."""
        self.base = entry
        self.plan.set_models(base=entry.path_text if entry is not None else "")
        self._models_changed()

    def add_zoo(self, entry: ModelEntry) -> ModelEntry:
        """Add a zoo model; a name already taken gets a suffix ("mlp-2"). Returns the entry kept.

        Re-adding the same file under the same name replaces the old entry (a reload).
        """
        name = entry.name
        old = self.zoo.get(name)
        if old is not None and old.path_text != entry.path_text:
            n = 2
            while f"{entry.name}-{n}" in self.zoo:
                n += 1
            name = f"{entry.name}-{n}"
        if name != entry.name:
            entry = replace(entry, name=name)
        self.zoo[name] = entry
        self.plan.set_models(zoo={k: v.path_text for k, v in self.zoo.items()})
        self._models_changed()
        return entry

    def remove_zoo(self, name: str) -> None:
        """Remove zoo model ``name``; its steps go too, as one undoable command.

        Raises KeyError when no zoo model has that name.
        """
        if name not in self.zoo:
            raise KeyError(name)
        used = [i for i, s in enumerate(self.plan.steps) if s.source == name]
        if used:
            self.undo_stack.push(RemoveStepsCommand(
                self.plan, used, f"Remove {len(used)} step(s) of {name}"))
        del self.zoo[name]
        self.plan.set_models(zoo={k: v.path_text for k, v in self.zoo.items()})
        self._models_changed()

    def clear(self) -> None:
        """Forget all models, the plan and the undo history (a new, empty session)."""
        self.base = None
        self.zoo.clear()
        self.plan.reset(AssemblyPlan())
        self.undo_stack.clear()
        self.select_step(-1)
        self._models_changed()

    def reset_plan(self, plan: AssemblyPlan) -> None:
        """Take over ``plan``'s content (a project being opened); clears the undo history."""
        self.plan.reset(plan)
        self.undo_stack.clear()
        self.select_step(0 if self.plan.steps else -1)

    def _models_changed(self) -> None:
        # Checks depend only on the loaded trees: drop the cache before anyone re-asks.
        self._checks.clear()
        self.modelsChanged.emit()

    def entry(self, name: str, role: str) -> ModelEntry | None:
        """The entry of model ``name`` in ``role`` ("base" or "zoo"), or None."""
        if role == "base":
            return self.base if self.base is not None and self.base.name == name else None
        return self.zoo.get(name)

    def check(self, source: str, source_layer: str, base_layer: str) -> StepCheck:
        """Can layer ``source_layer`` of zoo model ``source`` merge into ``base_layer``?

        Asks core.merge.preflight.check_step (cached: a drag hover asks many times); a model
        that is not loaded gives ok=False with the reason.
        """
        key = (source, source_layer, base_layer)
        hit = self._checks.get(key)
        if hit is not None:
            return hit
        donor = self.zoo.get(source)
        if self.base is None:
            result = StepCheck(False, "load a base model first")
        elif donor is None:
            result = StepCheck(False, f"zoo model {source!r} is not loaded")
        else:
            result = check_step(self.base.tree, donor.tree, source_layer, base_layer)
        self._checks[key] = result
        return result

    def check_plan_step(self, step: AssemblyStep) -> StepCheck:
        """:meth:`check` for a plan step."""
        return self.check(step.source, step.source_layer, step.base_layer)

    # -- plan edits ------------------------------------------------------------------------
    def push(self, command: QUndoCommand) -> None:
        """Run ``command`` through the undo stack (the only way the GUI edits the plan)."""
        self.undo_stack.push(command)

    # -- selection -------------------------------------------------------------------------
    @property
    def selected_step(self) -> int:
        """Index of the selected step, -1 for none."""
        return self._selected

    def select_step(self, index: int) -> None:
        """Select step ``index`` (clamped; -1 or an empty plan selects nothing)."""
        n = len(self.plan.steps)
        index = -1 if n == 0 or index < 0 else min(index, n - 1)
        if index != self._selected:
            self._selected = index
            self.selectedStepChanged.emit(index)

    def _on_plan_change(self, change: PlanChange) -> None:
        # Keep the selection on the same step as the list changes; an inserted step (a new
        # drop, or an undone removal) becomes selected so the editor shows what just appeared.
        sel = self._selected
        if change.kind == "insert":
            self.select_step(change.index)
        elif change.kind == "remove":
            if sel > change.index or (sel == change.index and sel >= len(self.plan.steps)):
                sel -= 1
            self._selected = -2  # force the signal: the step under the selection changed
            self.select_step(sel)
        elif change.kind == "move":
            if sel == change.index:
                self.select_step(change.to_index)
            elif change.index < sel <= change.to_index:
                self.select_step(sel - 1)
            elif change.to_index <= sel < change.index:
                self.select_step(sel + 1)
        elif change.kind == "reset":
            self._selected = -2
            self.select_step(0 if self.plan.steps else -1)
