"""Running the plan: the interpolation curve of one step, and exporting the merged model.

Both assemble the whole plan in the worker from the models already in memory (and the
permutation specs their layer trees hold), on a private copy of the plan.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QWidget

from .. import tasks
from ..job_queue import JobQueue
from .session import SessionController


class RunController(QObject):
    """Run (F5) and Export Merged Model.

    Parameters: session - the session whose plan runs; jobs - the job queue; dialog_parent -
    the window the file dialog belongs to. Attribute ``last_run``: the last RunResult (None
    after the session was replaced). Signals: ``runStarted(int step_index, str title)`` -
    the curve and diagnostics of the step are on their way; ``runFinished(RunResult)``;
    ``message(str, int timeout_ms)`` for the status bar.
    """

    runStarted = Signal(int, str)
    runFinished = Signal(object)
    message = Signal(str, int)

    def __init__(self, session: SessionController, jobs: JobQueue,
                 dialog_parent: QWidget | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.jobs = jobs
        self.dialog_parent = dialog_parent
        self.last_run: tasks.RunResult | None = None
        session.resultsForgotten.connect(self.forget)

    def can_run(self) -> bool:
        """A base model and at least one step: something to assemble."""
        ws = self.session.workspace
        return ws is not None and ws.base is not None and bool(ws.plan.steps)

    @Slot()
    def forget(self) -> None:
        """Drop the last result (the session it belonged to is gone)."""
        self.last_run = None

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
        if not self.can_run():
            self.message.emit("Run needs a base model and at least one step", 6000)
            return
        ws = self.session.workspace
        index = ws.selected_step if ws.selected_step >= 0 else len(ws.plan.steps) - 1
        data = self.session.data or "digits"
        step = ws.plan.steps[index]
        self.runStarted.emit(index, f"Step {index + 1}: {step.label}  \u2022  {data}")
        factory = partial(tasks.run_step_job, plan=self.session.plan_copy(data), step_index=index,
                          data=data, grid=self.session.grid, models=self._models_by_path(),
                          specs=self._specs_by_path())
        self.jobs.submit(factory, f"Running step {index + 1}", self._run_done)

    def _run_done(self, result: tasks.RunResult) -> None:
        self.last_run = result
        self.runFinished.emit(result)
        c = result.curve
        self.message.emit(f"Run finished in {result.seconds:.1f} s \u2014 mean loss naive "
                          f"{c.naive.mean_loss:.3f}, aligned {c.aligned.mean_loss:.3f}; barrier "
                          f"naive {c.naive.barrier:.3f}, aligned {c.aligned.barrier:.3f}", 20000)

    @Slot()
    def choose_merged_output(self) -> None:
        """Ask where to save the merged model, then export it."""
        if not self.can_run():
            return
        base = self.session.workspace.base
        start = str(Path(self.session.settings.last_dir) / f"{base.name}-merged.safetensors")
        file, _ = QFileDialog.getSaveFileName(self.dialog_parent, "Export Merged Model", start,
                                              "Safetensors (*.safetensors)")
        if file:
            if not file.endswith(".safetensors"):
                file += ".safetensors"
            self.export_merged(Path(file))

    def export_merged(self, out: Path) -> None:
        """Assemble the plan and save the merged model (with provenance) to ``out``."""
        factory = partial(tasks.save_merged_job, plan=self.session.plan_copy(), out=out,
                          models=self._models_by_path(), specs=self._specs_by_path())
        self.jobs.submit(factory, f"Exporting {out.name}", self._merged_saved)

    def _merged_saved(self, result: Any) -> None:
        self.message.emit(f"Saved the merged model to {result.out}", 15000)
