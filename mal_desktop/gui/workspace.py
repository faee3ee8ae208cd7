"""The GUI's session state: loaded models, their layer trees, the assembly plan, the undo stack.

The workspace owns no widgets. Panes and panels read it and edit the plan only by pushing undo
commands on :attr:`Workspace.undo_stack` (gui/undo.py). Every path that adds a step (a drop, the
"Merge into base layer" menu, the demo's example step) goes through :meth:`Workspace.add_step`,
and every fit question through :meth:`Workspace.check` (the one cache of pre-flight answers).
Loading models is not undoable (it is a file operation); removing a zoo model is, together with
its steps (:class:`RemoveZooCommand`), so the plan never refers to a model that is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from ..core.merge.plan import AssemblyPlan, AssemblyStep, PlanChange
from ..core.merge.preflight import StepCheck, check_step, kind_note
from .undo import AddStepCommand, RemoveStepCommand

if TYPE_CHECKING:
    from ..core.graph.tree import LayerTree
    from ..core.io.model import LoadedModel


@dataclass(frozen=True)
class ModelEntry:
    """One loaded model: display name (unique in the workspace), file, model and layer tree.

    output_choice: for a model returning several outputs, the output the user chose as the
    logits (the model was loaded with it); None: not chosen, the first is used (the plan then
    lists nothing for this model). output_shapes: per output, its shape without the batch axis
    (a size not known is None), to tell the user which output is which; empty when unknown.
    weights_read: False for an entry built from the file's headers while its weights are read
    (the module is on the meta device: the tree and pre-flight checks work, nothing can run
    it); the loaded entry then takes its place.
    """

    name: str
    path: str | Path | None
    model: "LoadedModel"
    tree: "LayerTree"
    output_choice: int | None = None
    output_shapes: tuple[tuple[int | None, ...] | None, ...] = ()
    weights_read: bool = True

    @staticmethod
    def from_model(model: "LoadedModel", name: str | None = None) -> "ModelEntry":
        """Build the entry (and its layer tree) for ``model``; slow for big models (worker).

        Raises whatever ``build_layer_tree`` raises (a MalError for unsupported models).
        """
        from ..core.graph.tree import build_layer_tree  # torch-heavy: import on first use

        return ModelEntry(name or model.name, model.path, model, build_layer_tree(model))

    @property
    def outputs(self) -> int:
        """How many outputs the model returns (1 for one tensor; 0 when not known)."""
        return self.model.outputs

    @property
    def output_index(self) -> int:
        """The output used as the logits."""
        return self.model.output_index

    @property
    def path_text(self) -> str:
        """The file as the plan stores it ("" for a model that only lives in memory)."""
        return str(self.path) if self.path is not None else ""


def step_label(step: AssemblyStep) -> str:
    """"zoo:layer \u2192 base layer", how hints and messages name a step."""
    return f"{step.source}:{step.source_layer} \u2192 {step.base_layer}"


def fit_text(step: AssemblyStep, check: StepCheck) -> str:
    """What a drop of ``step`` would do (its width case) or why it is refused."""
    if check.ok:
        return f"{step_label(step)}: {check.case_text}" + (f" \u2014 note: {check.note}"
                                                            if check.note else "")
    return f"Cannot merge {step_label(step)}: {check.reason}"


def replaced_text(replaced: Sequence[int]) -> str:
    """"; replaces step 1 (the same layer)" for a block taking the place of earlier steps."""
    if not replaced:
        return ""
    numbers = ", ".join(str(i + 1) for i in replaced)
    one = len(replaced) == 1
    return (f"; replaces step{'' if one else 's'} {numbers} (the same "
            f"layer{'' if one else 's'})")


@dataclass(frozen=True)
class StepAdded:
    """The outcome of :meth:`Workspace.add_step`: where the step went (-1: refused) and why."""

    step: AssemblyStep
    check: StepCheck
    index: int = -1
    block: str = ""  # several steps added as one edit: what they merge ("block z:b -> b")
    count: int = 1
    replaced: tuple[int, ...] = ()  # steps the block's steps took the place of (indices before)

    @property
    def ok(self) -> bool:
        """True when the step was added."""
        return self.index >= 0

    @property
    def message(self) -> str:
        """One line for the status bar: "Added step N: ..." or the reason it was refused."""
        if self.ok and self.count > 1:
            first = self.index + 2 - self.count
            return (f"Added steps {first}\u2013{self.index + 1}: {self.block}, one step per "
                    f"layer{replaced_text(self.replaced)} (Ctrl+Z undoes it as one edit)")
        text = fit_text(self.step, self.check)
        return f"Added step {self.index + 1}: {text}" if self.ok else text


class Workspace(QObject):
    """Base model, zoo models, the plan and its undo stack, and the selected step.

    Signals: ``modelsChanged()`` after the base or the zoo changed (a model reloaded with
    another output included); ``selectedStepChanged(int)`` with the selected step index (-1 for
    none); ``outputWanted(role, name, index)`` - the user asked for another output of a model as
    its logits (see :meth:`request_output`: whoever can load files answers it).
    """

    modelsChanged = Signal()
    selectedStepChanged = Signal(int)
    outputWanted = Signal(str, str, int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.base: ModelEntry | None = None
        self.zoo: dict[str, ModelEntry] = {}
        self.plan = AssemblyPlan()
        self.undo_stack = QUndoStack(self)
        self._selected = -1
        self._checks: dict[tuple[str, str, str], StepCheck] = {}
        # last: the selection moves to a step's new row once the views show the new rows (set
        # on the old rows, a move carried the view's selection to another step than ours)
        self.plan.subscribe(self._on_plan_change, last=True)

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
        old = self.zoo.get(entry.name)
        if old is not None and old.path_text != entry.path_text:
            entry = replace(entry, name=self.free_zoo_name(entry.name))
        self.zoo[entry.name] = entry
        self._zoo_changed()
        return entry

    def remove_zoo(self, name: str) -> None:
        """Remove zoo model ``name`` and its steps, as one undoable command.

        Undo brings back the model (at its place in the zoo) and its steps (at their places in
        the plan). Raises KeyError when no zoo model has that name.
        """
        if name not in self.zoo:
            raise KeyError(name)
        self.undo_stack.push(RemoveZooCommand(self, name))

    def free_zoo_name(self, name: str) -> str:
        """``name``, or ``name-2``, ``name-3``... : the first one no zoo model uses."""
        if name not in self.zoo:
            return name
        n = 2
        while f"{name}-{n}" in self.zoo:
            n += 1
        return f"{name}-{n}"

    def _take_zoo(self, name: str) -> None:
        """Drop zoo model ``name`` (not its steps; :class:`RemoveZooCommand` does those)."""
        del self.zoo[name]
        self._zoo_changed()

    def _put_zoo(self, entry: ModelEntry, position: int) -> None:
        """Insert ``entry`` back at ``position`` in the zoo (the order tabs and plans show)."""
        items = list(self.zoo.items())
        items.insert(min(position, len(items)), (entry.name, entry))
        self.zoo.clear()  # in place: views hold this dict
        self.zoo.update(items)
        self._zoo_changed()

    def _zoo_changed(self) -> None:
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
        self._sync_outputs()
        self.modelsChanged.emit()

    def _sync_outputs(self) -> None:
        """The plan's output choices follow the loaded entries (each loaded with its choice)."""
        base = self.base.output_choice if self.base is not None else None
        zoo = {n: e.output_choice for n, e in self.zoo.items() if e.output_choice is not None}
        self.plan.set_outputs(base, zoo)

    # -- which output is the logits ----------------------------------------------------------
    def request_output(self, role: str, name: str, index: int) -> bool:
        """Ask for output ``index`` of model ``name`` (in ``role``) as its logits.

        Reloading the model (its class output changes what discovery fixes) is file work, done
        in the worker by whoever listens to ``outputWanted``; it then calls
        :meth:`use_output`, an undoable command. Returns False when there is nothing to do (no
        such model, or already its choice).
        """
        entry = self.entry(name, role)
        if entry is None or entry.output_choice == index:
            return False
        if entry.output_index == index:  # the default made explicit: nothing to reload
            return self.use_output(role, replace(entry, output_choice=index))
        self.outputWanted.emit(role, name, index)
        return True

    def use_output(self, role: str, entry: ModelEntry) -> bool:
        """Replace the loaded model of ``entry``'s name by ``entry`` (the same file loaded with
        another output as its logits), as one undoable command. False (nothing pushed) when
        the model is gone or is another file by now."""
        old = self.entry(entry.name, role)
        if old is None or old.path_text != entry.path_text:
            return False
        self.push(ChooseOutputCommand(self, role, old, entry))
        return True

    def _swap_entry(self, role: str, entry: ModelEntry) -> None:
        if role == "base":
            self.set_base(entry)
        else:
            self.zoo[entry.name] = entry  # in place: keeps its position in the zoo
            self._zoo_changed()

    def take_back(self, role: str, shown: ModelEntry, old: ModelEntry | None) -> None:
        """Stop showing ``shown``, an entry from a file's headers whose load failed or was
        cancelled: ``old`` (the entry it replaced) comes back, or its place empties. Steps
        added meanwhile stay (they read as not loaded). Nothing happens when ``shown`` is no
        longer there."""
        if self.entry(shown.name, role) is not shown:
            return
        if role == "base":
            self.set_base(old)
        elif old is not None:
            self._swap_entry(role, old)
        else:
            self._take_zoo(shown.name)

    def take_loaded(self, role: str, shown: ModelEntry, loaded: ModelEntry) -> None:
        """Put ``loaded`` (the same model, its weights read) in place of ``shown``, an entry
        from the file's headers; not undoable (a file operation). Nothing happens when
        ``shown`` is no longer there."""
        if self.entry(shown.name, role) is shown:
            self._swap_entry(role, loaded)

    def reading(self) -> list[str]:
        """Names of the models whose weights are still being read (shown from their headers)."""
        return [e.name for e in [self.base, *self.zoo.values()]
                if e is not None and not e.weights_read]

    def entry(self, name: str, role: str) -> ModelEntry | None:
        """The entry of model ``name`` in ``role`` ("base" or "zoo"), or None."""
        if role == "base":
            return self.base if self.base is not None and self.base.name == name else None
        return self.zoo.get(name)

    def check(self, source: str, source_layer: str, base_layer: str) -> StepCheck:
        """Can layer ``source_layer`` of zoo model ``source`` merge into ``base_layer``?

        Asks core.merge.preflight.check_step, cached here and only here (a drag hover asks many
        times; the cache is dropped whenever the models change); a model that is not loaded
        gives ok=False with the reason.
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
            note = kind_note(self.base.model.id_range() is not None,
                             donor.model.id_range() is not None, source)
            if result.ok and note:
                result = replace(result, note=note)
        self._checks[key] = result
        return result

    def check_plan_step(self, step: AssemblyStep) -> StepCheck:
        """:meth:`check` for a plan step."""
        return self.check(step.source, step.source_layer, step.base_layer)

    # -- plan edits ------------------------------------------------------------------------
    def push(self, command: QUndoCommand) -> None:
        """Run ``command`` through the undo stack (the only way the GUI edits the plan)."""
        self.undo_stack.push(command)

    def add_step(self, step: AssemblyStep, index: int | None = None) -> StepAdded:
        """Add ``step`` (undoably) if it fits; the one entry point every add-step path uses.

        Parameters: step - the step to add; index - where in the plan (default: append).
        Returns the outcome: the index it went to, or -1 with the reason it does not fit (the
        plan and the undo stack are then untouched).
        """
        check = self.check_new_step(step)
        if not check.ok:
            return StepAdded(step, check)
        command = AddStepCommand(self.plan, step, index)
        self.push(command)
        return StepAdded(step, check, command.index)

    def first_blocked_step(self) -> tuple[int, StepCheck] | None:
        """The first step that cannot run with the models open now (a project naming a layer
        the base lacks), with its check; None when every step can."""
        for i, step in enumerate(self.plan.steps):
            check = self.check_plan_step(step)
            if not check.ok:
                return i, check
        return None

    def planned_as(self, step: AssemblyStep) -> int:
        """The index of the step with ``step``'s route (same zoo layer into the same base
        layer), -1 when there is none."""
        return next((i for i, s in enumerate(self.plan.steps) if s.route == step.route), -1)

    def check_new_step(self, step: AssemblyStep) -> StepCheck:
        """Whether ``step`` may be added: :meth:`check_plan_step`, and a refusal when the plan
        already merges this layer there (a second step would merge the merged layer again)."""
        check = self.check_plan_step(step)
        i = self.planned_as(step)
        if not check.ok or i < 0:
            return check
        return StepCheck(False, f"it is already step {i + 1}: select that step to change its "
                                f"\u03bb or method", check.case_text)

    def add_steps(self, steps: list[AssemblyStep], block: str) -> StepAdded:
        """Add ``steps`` (a block's layers, ``block`` names it) at the end of the plan as one
        undoable edit, if every one fits; returns the first refusal, else the outcome of the
        last step added (its message counts them all)."""
        for step in steps:
            check = self.check_plan_step(step)
            if not check.ok:
                return StepAdded(step, check)
        replaced = self.replaced_by(steps)
        self.undo_stack.beginMacro(f"Merge {block}")
        try:
            for i in reversed(replaced):
                self.push(RemoveStepCommand(self.plan, i))
            for step in steps:
                command = AddStepCommand(self.plan, step, None)
                self.push(command)
        finally:
            self.undo_stack.endMacro()
        return StepAdded(steps[-1], self.check_plan_step(steps[-1]), command.index, block,
                         len(steps), tuple(replaced))

    def replaced_by(self, steps: list[AssemblyStep]) -> list[int]:
        """Indices of the plan's steps that a block's ``steps`` replace (the same layer into
        the same place, e.g. the language demo's example step when its block is dropped)."""
        routes = {step.route for step in steps}
        return [i for i, s in enumerate(self.plan.steps) if s.route in routes]

    def loaded_models(self) -> dict[str, "LoadedModel"]:
        """The loaded models open now: "" the base, else zoo names (what a run's results are
        kept against: once one is replaced, they describe another merge)."""
        out = {name: e.model for name, e in self.zoo.items()}
        if self.base is not None:
            out[""] = self.base.model
        return out

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
        # drop, or an undone removal) becomes selected so the editor shows what just appeared,
        # and so does an edited one (an undone or redone edit of another step: the editor showed
        # nothing, or another step, while the change happened out of sight).
        sel = self._selected
        if change.kind in ("insert", "update"):
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


class RemoveZooCommand(QUndoCommand):
    """Remove a zoo model and the steps that use it; undo restores both in their places.

    One command (not a Qt macro of children: PySide does not keep Python child commands alive
    for their parent). If another model took the name while this one was gone (a different
    file opened under the same name), undo brings this one back under a free name and points
    its steps at it; the same file under the same name is simply kept.
    """

    def __init__(self, workspace: Workspace, name: str,
                 parent: QUndoCommand | None = None) -> None:
        self._ws = workspace
        self._entry = workspace.zoo[name]
        self._position = list(workspace.zoo).index(name)
        self._removed = [(i, s) for i, s in enumerate(workspace.plan.steps) if s.source == name]
        n = len(self._removed)
        super().__init__(f"Remove zoo model {name}" + (f" and its {n} step{'s' if n != 1 else ''}"
                                                      if n else ""), parent)

    def redo(self) -> None:
        plan = self._ws.plan
        for i, _step in reversed(self._removed):  # highest first: lower indices stay valid
            plan.remove_step(i)
        # Steps first, then the model: the plan never names a model that is gone.
        self._ws._take_zoo(self._entry.name)

    def undo(self) -> None:
        ws = self._ws
        taken = ws.zoo.get(self._entry.name)
        if taken is None:
            ws._put_zoo(self._entry, self._position)
        elif taken.path_text != self._entry.path_text:
            self._entry = replace(self._entry, name=ws.free_zoo_name(self._entry.name))
            self._removed = [(i, replace(s, source=self._entry.name)) for i, s in self._removed]
            ws._put_zoo(self._entry, self._position)
        for i, step in self._removed:  # lowest first: each lands at its old index
            ws.plan.insert_step(i, step)


class ChooseOutputCommand(QUndoCommand):
    """Use another output of a model as its logits: the model, reloaded with that output in the
    worker, replaces the loaded one; undo puts the old one back (nothing is reloaded). The plan's
    ``base_output`` / ``zoo_outputs`` follow (:meth:`Workspace._sync_outputs`)."""

    def __init__(self, workspace: Workspace, role: str, old: ModelEntry, new: ModelEntry,
                 parent: QUndoCommand | None = None) -> None:
        super().__init__(f"Use output {new.output_index} of {new.name} as its logits", parent)
        self._ws, self._role, self._old, self._new = workspace, role, old, new

    def _put(self, entry: ModelEntry) -> None:
        # still loaded, and still this file: another file opened under the same name (a base
        # replaced by File > Open Base Model) is left alone
        current = self._ws.entry(entry.name, self._role)
        if current is not None and current.path_text == entry.path_text:
            self._ws._swap_entry(self._role, entry)

    def redo(self) -> None:
        self._put(self._new)

    def undo(self) -> None:
        self._put(self._old)
