"""What runs found, kept per plan step, and whether the plan has changed since.

Every panel that shows a result of a step (the interpolation curve, the alignment diagnostics)
reads it from here for the *selected* step (:class:`~mal_desktop.gui.views.selected_step.
SelectedStepPresenter`), so the panels cannot disagree about which step they show.

A result belongs to a step *in its plan*: what a step's merge does depends on the steps before
it and on its own settings, not on its lambda (a curve sweeps every lambda), and on which layers
the later chain steps of its donor take (they share one chain solve: core/merge/chains.py). So
a record is kept under the step's **signature** (the steps before it, the step itself with
lambda left out, and the layer pairs of its donor's later chain steps);
looking a step up finds the record of exactly this plan (fresh) or, failing that, the last
record of the same layer pair, marked stale, so the user still sees it and knows to run again.
A record also remembers which outputs the models used as their logits (:func:`outputs_key`): a
curve of another output is stale too; and which loaded models it ran on (the base and its
steps' donors, by weak reference, so a closed model is not kept in memory): once the base is
replaced or a donor reloaded, the same plan no longer describes the same merge.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

from PySide6.QtCore import QObject, Signal

from ..core.merge.plan import AssemblyPlan, AssemblyStep

if TYPE_CHECKING:
    from ..core.evaluate.metrics import CurveResult
    from ..core.merge.results import StepDiagnostics

# (the steps up to one, its lambda left out; its donor's later chain steps, as layer pairs)
Signature = tuple[tuple[AssemblyStep, ...], tuple[AssemblyStep, ...]]
Pair = tuple[str, str, str]


def signature(steps: Sequence[AssemblyStep], index: int) -> Signature:
    """What the results of step ``index`` depend on: the steps up to it, with its lambda left
    out, then the layer pairs of its donor's later chain steps (a deeper one extends the chain
    solve this step shares; their lambdas and methods do not matter to it)."""
    step = steps[index]
    later = tuple(AssemblyStep(s.source, s.source_layer, s.base_layer, 0.0, "chain")
                  for s in steps[index + 1:] if s.source == step.source and s.align == "chain")
    return (*steps[:index], replace(step, lam=0.0)), later


def outputs_key(plan: AssemblyPlan) -> Any:
    """Which outputs the plan's models use as their logits, hashable; None when none was
    chosen (every model's first)."""
    if plan.base_output is None and not plan.zoo_outputs:
        return None
    return plan.base_output, tuple(sorted(plan.zoo_outputs.items()))


def used_models(steps: Sequence[AssemblyStep], index: int) -> set[str]:
    """The models step ``index``'s results depend on: the base ("") and the donors of the
    steps up to it."""
    return {"", *(s.source for s in steps[:index + 1])}


def pair(step: AssemblyStep) -> Pair:
    """(zoo model, zoo layer, base layer): the step as the user picked it."""
    return step.source, step.source_layer, step.base_layer


@dataclass(frozen=True)
class StepRecord:
    """The results of one step of one plan.

    step - the step as it was run (lambda then); index - its place in the plan then; data - the
    curve's data set ("" when there is no curve); curve and diagnostics (None: not computed);
    outputs - the models' outputs used as logits then (:func:`outputs_key`); models - the
    loaded models it ran on (:func:`used_models`: "" the base, else zoo names), weakly.
    """

    step: AssemblyStep
    index: int
    data: str = ""
    curve: "CurveResult | None" = None
    diagnostics: "StepDiagnostics | None" = None
    outputs: Any = None
    models: tuple[tuple[str, "weakref.ref[Any]"], ...] = ()


@dataclass(frozen=True)
class Lookup:
    """A step's record and whether it is fresh (the plan before and at the step is unchanged)
    and on the data set asked for."""

    record: StepRecord | None = None
    fresh: bool = False
    same_data: bool = True
    replaced: str = ""  # the models opened anew since the run, in words ("" when none)

    @property
    def stale_reason(self) -> str:
        """Why the record no longer describes the step ("" when it does)."""
        if self.record is None:
            return ""
        if self.replaced:
            return f"{self.replaced} since this run"
        if not self.fresh:
            return "the plan changed since this run"
        if not self.same_data:
            return f"computed on {self.record.data}"
        return ""


class RunResults(QObject):
    """Records by step signature. Signals: ``changed()`` after any put or clear."""

    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._records: dict[Signature, StepRecord] = {}
        self._latest: dict[Pair, Signature] = {}
        self._outputs: Any = None
        self._models: dict[str, weakref.ref[Any]] = {}

    def set_context(self, outputs: Any, models: Mapping[str, Any]) -> None:
        """The outputs the models use as logits now (:func:`outputs_key`) and the loaded models
        open now ("" the base, else zoo names); records made with others look stale."""
        refs = {name: weakref.ref(m) for name, m in models.items()}
        if outputs != self._outputs or refs.keys() != self._models.keys() or any(
                refs[n]() is not self._models[n]() for n in refs):
            self._outputs, self._models = outputs, refs
            self.changed.emit()

    def _put(self, steps: Sequence[AssemblyStep], index: int, models: Mapping[str, Any],
             **fields: Any) -> None:
        sig = signature(steps, index)
        old = self._records.get(sig) or StepRecord(steps[index], index)
        ran_on = tuple(sorted((n, weakref.ref(models[n]))
                              for n in used_models(steps, index) if n in models))
        self._records[sig] = replace(old, step=steps[index], index=index, models=ran_on,
                                     **fields)
        self._latest[pair(steps[index])] = sig
        self.changed.emit()

    def put_diagnostics(self, steps: Sequence[AssemblyStep], diagnostics: "StepDiagnostics",
                        outputs: Any = None, models: Mapping[str, Any] | None = None) -> None:
        """Keep ``diagnostics`` (of step ``diagnostics.index`` of the plan ``steps`` that ran on
        the loaded ``models``, using ``outputs`` as logits)."""
        if 0 <= diagnostics.index < len(steps):
            self._put(steps, diagnostics.index, models or {}, diagnostics=diagnostics,
                      outputs=outputs)

    def put_curve(self, steps: Sequence[AssemblyStep], index: int, curve: "CurveResult",
                  data: str, outputs: Any = None,
                  models: Mapping[str, Any] | None = None) -> None:
        """Keep the finished curve of step ``index`` of the plan ``steps`` on data set ``data``
        (run on the loaded ``models``, using ``outputs`` as logits)."""
        self._put(steps, index, models or {}, curve=curve, data=data, outputs=outputs)

    def _replaced(self, record: StepRecord) -> str:
        """The models ``record`` ran on that are no longer the ones open, in words."""
        gone = []
        for name, ref in record.models:
            now = self._models.get(name)
            if ref() is None or now is None or now() is not ref():
                gone.append(name)
        if not gone:
            return ""
        words = ["the base model was replaced" if n == "" else f"zoo model {n} was reloaded"
                 for n in gone]
        return "; ".join(words)

    def lookup(self, steps: Sequence[AssemblyStep], index: int, data: str = "") -> Lookup:
        """The record of step ``index`` of ``steps``: this plan's, else the last one of the same
        layer pair (stale), else none. ``data``: the data set the curve should be on."""
        if not 0 <= index < len(steps):
            return Lookup()
        record = self._records.get(signature(steps, index))
        fresh = record is not None and record.outputs == self._outputs
        if record is None:
            sig = self._latest.get(pair(steps[index]))
            record = self._records.get(sig) if sig is not None else None
        if record is None:
            return Lookup()
        same = not data or not record.data or record.data == data
        replaced = self._replaced(record)
        return Lookup(record, fresh and not replaced, same, replaced)

    def clear(self) -> None:
        """Forget everything (a new session)."""
        self._records.clear()
        self._latest.clear()
        self.changed.emit()

    def __len__(self) -> int:
        return len(self._records)
