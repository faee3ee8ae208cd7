"""Evaluating: the models x datasets matrix of the Evaluate panel and the MAL study.

:class:`EvalMixin` is mixed into :class:`~mal_desktop.gui.main_window.MainWindow` next to
:class:`~mal_desktop.gui.session.SessionMixin` (jobs, start-up, run) and
:class:`~mal_desktop.gui.session_files.FilesMixin` (open, save). Both evaluations run in the
worker through :meth:`SessionMixin.submit`: the matrix as
:func:`~mal_desktop.gui.tasks.eval_matrix_task` (its cells reach the panel as progress payloads),
the study as :func:`~mal_desktop.gui.tasks.study_task`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from . import tasks

__all__ = ["EvalMixin"]


class EvalMixin:
    """Evaluate Models and Run MAL Study for the main window (see module docstring)."""

    def _install_evaluate_panel(self, workspace: Any) -> None:
        """Create the Evaluate panel over ``workspace`` in its dock (from ``install_views``)."""
        from .views.evaluate_panel import EvaluatePanel

        a = self.actions
        self.evaluate_panel = EvaluatePanel(workspace, a.evaluate, a.cancel, a.run_study)
        self.set_dock_widget(self.evaluate_dock, self.evaluate_panel)

    def evaluate_models(self) -> None:
        """Evaluate the models x datasets ticked in the Evaluate panel, in the worker."""
        panel = self.evaluate_panel
        if panel is None:
            return
        self.evaluate_dock.show()
        self.evaluate_dock.raise_()
        factory = panel.prepare_run()
        if factory is None:
            self.show_message("Evaluate needs at least one model and one data set ticked")
            return
        self.submit(factory, "Evaluating models", panel.set_result, panel.run_stopped)

    def choose_study(self) -> None:
        """Ask for the study's output folder (and quick mode), then run it."""
        from .dialogs.study import StudyDialog

        dialog = StudyDialog(self, Path(self.settings.last_dir) / "mal-study")
        if dialog.exec():
            self.run_study(dialog.out_dir(), dialog.is_small())

    def run_study(self, out_dir: Path, small: bool = False) -> None:
        """Run the MAL study into ``out_dir`` in the worker; show the report link when done."""
        factory = partial(tasks.study_task, out_dir=Path(out_dir), small=small)
        self.submit(factory, "Running the MAL study", self._study_done)

    def _study_done(self, result: Any) -> None:
        from .dialogs.study import show_study_report

        self.study_message = show_study_report(self, result)
        self.show_message(f"MAL study written to {result.report_path}", 20000)
