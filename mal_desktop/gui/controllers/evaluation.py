"""Evaluating: the models x datasets matrix of the Evaluate panel, and the MAL study.

Both run in the worker through the job queue: the matrix as
:func:`~mal_desktop.gui.tasks.eval_matrix_task` (its finished cells reach the panel as progress
payloads while it runs), the study as :func:`~mal_desktop.gui.tasks.study_task`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget

from .. import tasks
from ..job_queue import JobQueue
from ..settings import Settings

if TYPE_CHECKING:  # the panel imports the engine: created once it is up
    from ..views.evaluate_panel import EvaluatePanel


class EvaluationController(QObject):
    """Evaluate Models (Ctrl+E) and Run MAL Study.

    Parameters: jobs - the job queue; settings - the last folder (study output); dialog_parent
    - the window dialogs belong to. Attributes: ``panel`` - the Evaluate panel whose ticked
    models and data sets are evaluated (set with :meth:`set_panel`); ``study_message`` - the
    last "study finished" message box. Signals: ``panelWanted()`` - Evaluate was asked for, the
    panel should be visible; ``studyFinished(StudyResult)``; ``message(str, int timeout_ms)``.
    """

    panelWanted = Signal()
    studyFinished = Signal(object)
    message = Signal(str, int)

    def __init__(self, jobs: JobQueue, settings: Settings, dialog_parent: QWidget | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.settings = settings
        self.dialog_parent = dialog_parent
        self.panel: EvaluatePanel | None = None
        self.study_message: QMessageBox | None = None
        jobs.progress.connect(self._on_progress)

    def set_panel(self, panel: "EvaluatePanel") -> None:
        """Evaluate what ``panel`` has ticked, and show its cells there as they finish."""
        self.panel = panel

    @Slot(object)
    def _on_progress(self, event: Any) -> None:
        # No isinstance: the class lives in the engine, imported only once it is up.
        if self.panel is not None and type(event.payload).__name__ == "MatrixCell":
            self.panel.add_cell(event.payload)

    @Slot()
    def evaluate(self) -> None:
        """Evaluate the models x datasets ticked in the panel, in the worker."""
        panel = self.panel
        if panel is None:
            return
        self.panelWanted.emit()
        factory = panel.prepare_run()
        if factory is None:
            self.message.emit("Evaluate needs at least one model and one data set ticked", 6000)
            return
        self.jobs.submit(factory, "Evaluating models", panel.set_result, panel.run_stopped)

    @Slot()
    def choose_study(self) -> None:
        """Ask for the study's output folder (and quick mode), then run it."""
        from ..dialogs.study import StudyDialog

        dialog = StudyDialog(self.dialog_parent, Path(self.settings.last_dir) / "mal-study")
        if dialog.exec():
            self.run_study(dialog.out_dir(), dialog.is_small())

    def run_study(self, out_dir: Path, small: bool = False) -> None:
        """Run the MAL study into ``out_dir`` in the worker (``small``: the quick version);
        the report link is shown when it is done."""
        factory = partial(tasks.study_task, out_dir=Path(out_dir), small=small)
        self.jobs.submit(factory, "Running the MAL study", self._study_done)

    def _study_done(self, result: Any) -> None:
        from ..dialogs.study import show_study_report

        self.study_message = show_study_report(self.dialog_parent, result)
        self.message.emit(f"MAL study written to {result.report_path}", 20000)
        self.studyFinished.emit(result)
