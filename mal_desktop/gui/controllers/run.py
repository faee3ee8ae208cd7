"""Running the plan: the interpolation curve of one step, and exporting the merged model.

Both assemble the whole plan in the worker from the models already in memory (and the
permutation specs their layer trees hold), on a private copy of the plan. What they find goes to
:attr:`RunController.results` (per step of the plan that ran); the curve being computed is
:attr:`RunController.live` until the run ends. Panels read both for the selected step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QWidget

from ...core.merge.plan import AssemblyStep
from .. import tasks
from ..job_queue import JobQueue
from ..plots.curve_data import barrier_informative
from ..run_results import RunResults, Signature, outputs_key, signature
from .session import SessionController


@dataclass
class LiveRun:
    """The run in progress: the plan it runs (steps), the step it sweeps, the data set, and the
    curve points so far (in arrival order)."""

    steps: tuple[AssemblyStep, ...]
    index: int
    data: str
    points: list[Any] = field(default_factory=list)

    @property
    def signature(self) -> Signature:
        """The swept step's signature (see run_results)."""
        return signature(self.steps, self.index)


EXPORT_FILTERS = ("Safetensors file (*.safetensors)",
                  "Model folder \u2014 a Hugging Face folder for a Hugging Face base, else shards "
                  "(*)")


def merged_target(name: str, chosen_filter: str) -> str:
    """Where the export dialog's answer saves: a file named without extension gets
    ``.safetensors`` unless the folder type was chosen (then it names the folder)."""
    if chosen_filter != EXPORT_FILTERS[1] and not name.endswith(".safetensors"):
        return name + ".safetensors"
    return name


class RunController(QObject):
    """Run (F5) and Export Merged Model.

    Parameters: session - the session whose plan runs; jobs - the job queue; dialog_parent -
    the window the file dialog belongs to. Attributes: ``last_run`` - the last RunResult (None
    after the session was replaced); ``results`` - the RunResults of this session; ``live`` - the
    LiveRun in progress (None between runs). Signals: ``runStarted(int step_index)``;
    ``curvePoint(CurvePoint)`` - a point of the live curve; ``runFinished(RunResult)``;
    ``runStopped()`` - cancelled or failed (the results kept so far stay);
    ``message(str, int timeout_ms)`` for the status bar.
    """

    runStarted = Signal(int)
    curvePoint = Signal(object)
    runFinished = Signal(object)
    runStopped = Signal()
    message = Signal(str, int)

    def __init__(self, session: SessionController, jobs: JobQueue,
                 dialog_parent: QWidget | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.jobs = jobs
        self.dialog_parent = dialog_parent
        self.last_run: tasks.RunResult | None = None
        self.results = RunResults(self)
        self.live: LiveRun | None = None
        session.resultsForgotten.connect(self.forget)
        session.stateChanged.connect(self._sync_context)

    def can_run(self) -> bool:
        """A base model and at least one step: something to assemble; every model's weights
        read (a model shown from its headers cannot run yet); every step able to run."""
        return not self.why_not_run()

    def why_not_run(self) -> str:
        """Why Run cannot start now, in one line ("" when it can)."""
        ws = self.session.workspace
        if ws is None or ws.base is None or not ws.plan.steps:
            return ("Run needs a base model and at least one step: drag a zoo layer onto a base "
                    "layer")
        if ws.reading():
            return (f"Run waits for the weights of {', '.join(ws.reading())}: they are still "
                    "being read")
        blocked = ws.first_blocked_step()
        if blocked is not None:  # the run would stop there: say so before it starts
            i, check = blocked
            return f"Step {i + 1} cannot run: {check.reason}. Edit or remove it to run the plan"
        return ""

    @Slot()
    def forget(self) -> None:
        """Drop every result (the session they belonged to is gone)."""
        self.last_run = None
        self.live = None
        self.results.clear()

    @Slot()
    def _sync_context(self) -> None:
        """Results of other outputs than the models use now, or of models replaced since,
        read as stale."""
        ws = self.session.workspace
        if ws is not None:
            self.results.set_context(outputs_key(ws.plan), ws.loaded_models())

    def _collect(self, steps: tuple[AssemblyStep, ...], event: Any, outputs: Any = None,
                 models: dict[str, Any] | None = None) -> None:
        """A progress event of a run or an export (of ``steps`` on the loaded ``models``,
        using ``outputs`` as logits): keep its partial results."""
        kind = type(event.payload).__name__  # no isinstance: the classes live in the engine
        if kind == "StepDiagnostics":
            self.results.put_diagnostics(steps, event.payload, outputs, models)
        elif kind == "CurvePoint" and self.live is not None:
            self.live.points.append(event.payload)
            self.curvePoint.emit(event.payload)

    def _models_by_path(self) -> dict[str, Any]:
        ws = self.session.workspace
        return {e.path_text: e.model for e in [ws.base, *ws.zoo.values()]}

    def _specs_by_path(self) -> dict[str, Any]:
        ws = self.session.workspace
        return {e.path_text: e.tree.spec for e in [ws.base, *ws.zoo.values()]}

    @Slot()
    def run(self) -> None:
        """Assemble the plan and compute the curve of the selected step (the last one when none
        is selected) in the worker."""
        ws = self.session.workspace
        why = self.why_not_run()
        if why:
            self.message.emit(why, 8000)
            return
        if ws.selected_step < 0:  # Run shows its step: make it the selected one
            ws.select_step(len(ws.plan.steps) - 1)
        index = ws.selected_step
        data = self.session.data or "digits"
        plan = self.session.plan_copy(data)
        steps = tuple(plan.steps)
        factory = partial(tasks.run_step_job, plan=plan, step_index=index,
                          data=data, grid=self.session.grid, models=self._models_by_path(),
                          specs=self._specs_by_path())
        outputs, models = outputs_key(plan), ws.loaded_models()
        self.jobs.submit(factory, f"Running step {index + 1}",
                         partial(self._run_done, steps, outputs, models), self._run_stopped,
                         partial(self._run_progress, steps, index, data, outputs, models))

    def _run_progress(self, steps: tuple[AssemblyStep, ...], index: int, data: str,
                      outputs: Any, models: dict[str, Any], event: Any) -> None:
        if self.live is None or self.live.steps != steps:  # the first event: the job started
            self.live = LiveRun(steps, index, data)
            self.runStarted.emit(index)
        self._collect(steps, event, outputs, models)

    def _run_stopped(self) -> None:
        self.live = None
        self.runStopped.emit()

    def _run_done(self, steps: tuple[AssemblyStep, ...], outputs: Any,
                  models: dict[str, Any], result: tasks.RunResult) -> None:
        self.live = None
        self.last_run = result
        self.results.put_curve(steps, result.step_index, result.curve, result.data, outputs,
                               models)
        self.runFinished.emit(result)
        c = result.curve
        text = (f"Run finished in {result.seconds:.1f} s \u2014 mean LMC loss naive "
                f"{c.naive.mean_loss:.3f}, aligned {c.aligned.mean_loss:.3f}; \u03bb* naive "
                f"{c.naive.threshold:.2f}, aligned {c.aligned.threshold:.2f}")
        barriers = [f"{s} {getattr(c, s).barrier:.3f}" for s in ("naive", "aligned")
                    if barrier_informative(c.lambdas, getattr(c, s))]
        if barriers:  # a zero barrier while the loss climbs would read as a contradiction
            text += "; barrier " + ", ".join(barriers)
        self.message.emit(text, 20000)

    @Slot()
    def choose_merged_output(self) -> None:
        """Ask where to save the merged model - a .safetensors file, or a model folder (the
        choice for a Hugging Face base: transformers loads it) - then export it."""
        if not self.can_run():
            return
        base = self.session.workspace.base
        folder = base.model.form == "hf-folder"
        start = Path(self.session.settings.last_dir) / (
            f"{base.name}-merged" + ("" if folder else ".safetensors"))
        file, chosen = QFileDialog.getSaveFileName(
            self.dialog_parent, "Export Merged Model", str(start), ";;".join(EXPORT_FILTERS),
            EXPORT_FILTERS[1 if folder else 0])
        if file:
            self.export_merged(Path(merged_target(file, chosen)))

    def export_merged(self, out: Path) -> None:
        """Assemble the plan and save the merged model (with provenance) to ``out``."""
        plan = self.session.plan_copy()
        factory = partial(tasks.save_merged_job, plan=plan, out=out,
                          models=self._models_by_path(), specs=self._specs_by_path())
        self.jobs.submit(factory, f"Exporting {out.name}", self._merged_saved,
                         on_progress=partial(self._collect, tuple(plan.steps),
                                             outputs=outputs_key(plan),
                                             models=self.session.workspace.loaded_models()))

    def _merged_saved(self, result: Any) -> None:
        self.message.emit(f"Saved the merged model to {result.out}", 15000)
