"""What the main window does: jobs, start-up, unsaved state, running and exporting.

:class:`SessionMixin` is mixed into :class:`~mal_desktop.gui.main_window.MainWindow` (which
provides the widgets) next to :class:`~mal_desktop.gui.session_files.FilesMixin` (opening and
saving) and :class:`~mal_desktop.gui.session_eval.EvalMixin` (the evaluation matrix and the
study). Every long operation becomes a task for the one JobRunner; tasks queue
behind each other (the engine warm-up runs first), and Cancel (Esc) stops the running one and
drops the queue. Results are applied here, in the GUI thread.
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QUndoGroup
from PySide6.QtWidgets import QFileDialog, QStyle

from ..core.merge.plan import AssemblyPlan
from ..core.progress import ProgressEvent
from . import tasks
from .log import report_error, report_exception
from ..core.project.document import Project

LOG = logging.getLogger("mal_desktop.session")

__all__ = ["SessionMixin"]


@dataclass
class _Task:
    factory: Callable[..., Any]
    name: str
    on_done: Callable[[Any], None]
    on_stop: Callable[[], None] | None = None  # the job was cancelled or failed


class SessionMixin:
    """Behaviour of the main window (see module docstring). Expects MainWindow's widgets."""

    # -- set-up -----------------------------------------------------------------------------
    def _init_session(self, workspace: Any | None) -> None:
        self.workspace = None
        self.engine: tasks.EngineInfo | None = None
        self.project_path: Path | None = None
        self._session_dirty = False
        self._queue: deque[_Task] = deque()
        self._current: _Task | None = None
        self._given_workspace = workspace
        self._startup: tuple[list[str], bool] | None = None
        self._last_run: tasks.RunResult | None = None
        self.base_pane = self.assembly_panel = self.curve_plot = self.diagnostics = None
        self.evaluate_panel = None
        self.study_message = None  # the last "study finished" message box
        self.undo_group = QUndoGroup(self)
        self.undo_action = self.undo_group.createUndoAction(self, "&Undo")
        self.undo_action.setShortcuts(QKeySequence.StandardKey.Undo)
        self.actions.adopt_icon(self.undo_action, "edit-undo", QStyle.StandardPixmap.SP_ArrowBack)
        self.redo_action = self.undo_group.createRedoAction(self, "&Redo")
        self.redo_action.setShortcuts(QKeySequence.StandardKey.Redo)
        self.actions.adopt_icon(self.redo_action, "edit-redo",
                                QStyle.StandardPixmap.SP_ArrowForward)

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, factory: Callable[..., Any], name: str,
               on_done: Callable[[Any], None],
               on_stop: Callable[[], None] | None = None) -> None:
        """Run ``factory`` (a job factory) when the runner is free; ``on_done(result)`` after,
        or ``on_stop()`` when it is cancelled, fails, or is dropped from the queue."""
        self._queue.append(_Task(factory, name, on_done, on_stop))
        if self.runner.is_running():
            self.show_message(f"Queued: {name}")
        self._start_next()

    def queue_clear(self) -> None:
        queued, self._queue = list(self._queue), deque()
        for task in queued:
            self._stopped(task)

    @staticmethod
    def _stopped(task: _Task | None) -> None:
        if task is not None and task.on_stop is not None:
            try:
                task.on_stop()
            except Exception as exc:  # noqa: BLE001 - a bug in a handler must be seen
                report_exception(exc, f"{task.name} failed")

    def _start_next(self) -> None:
        if self.runner.is_running() or not self._queue:
            return
        task = self._queue.popleft()
        self._current = task
        self.runner.start(task.factory, task.name)

    def cancel_job(self) -> None:
        """Cancel the running job and everything queued behind it."""
        if self.runner.is_running():
            self.queue_clear()
            self.runner.cancel()
            self.statusBar().showMessage(f"Cancelling: {self.runner.job_name()}\u2026")

    def _on_job_progress(self, event: ProgressEvent) -> None:
        self.show_progress(event)
        payload = event.payload
        if payload is None:
            return
        kind = type(payload).__name__  # no isinstance: avoids importing the classes early
        if kind == "StepDiagnostics" and self.diagnostics is not None:
            self.diagnostics.show_step(payload)
        elif kind == "CurvePoint" and self.curve_plot is not None:
            self.curve_plot.add_point(payload)
        elif kind == "MatrixCell" and self.evaluate_panel is not None:
            self.evaluate_panel.add_cell(payload)

    def _on_job_finished(self, result: object) -> None:
        task, self._current = self._current, None
        if task is not None:
            try:
                task.on_done(result)
            except Exception as exc:  # noqa: BLE001 - a bug applying a result must be seen
                self.queue_clear()
                report_exception(exc, f"{task.name} failed", self)
        self._start_next()
        self.update_actions()

    def _on_job_failed(self, message: str, details: str) -> None:
        task, self._current = self._current, None
        self._stopped(task)
        self.queue_clear()  # what was queued may depend on the failed job
        report_error(message, details, f"{task.name if task else 'Job'} failed", self)
        self.show_message(f"{task.name if task else 'Job'} failed: {message}", 10000)
        self.update_actions()

    def _on_job_cancelled(self) -> None:
        task, self._current = self._current, None
        self._stopped(task)
        self.show_message(f"{task.name if task else 'Job'} cancelled")
        self._start_next()
        self.update_actions()

    # -- start-up ------------------------------------------------------------------------------
    def start_up(self, files: Iterable[str] = (), demo: bool = False) -> None:
        """After the window shows: start the engine, install views, then open what was asked."""
        self._startup = ([str(f) for f in files], demo)
        if self._given_workspace is not None:
            self.install_views()
        self.submit(tasks.warmup_job, "Starting the engine", self._engine_ready)

    def _engine_ready(self, info: tasks.EngineInfo) -> None:
        self.engine = info
        self.device_label.setText(f"Device: {info.device}")
        LOG.info("engine ready in %.2f s on %s", info.seconds, info.device)
        self._fill_datasets(info.datasets)
        self.install_views()
        # Start-up garbage is done: freeze it so the collector never walks it again (a full
        # collection with torch loaded can pause the GUI for 100+ ms).
        gc.collect()
        gc.freeze()
        files, demo = self._startup or ([], False)
        self._startup = None
        recovered = self.check_recovery()
        if files:
            self.open_paths(files)
        elif demo:
            self.build_and_open_demo()
        elif not recovered and not self.settings.demo_offered and self.workspace.base is None:
            self.settings.demo_offered = True
            self.submit(tasks.demo_status_job, "Looking for the demo zoo",
                        partial(self._show_demo_dialog, offer=True))

    def _fill_datasets(self, datasets: dict[str, str]) -> None:
        combo = self.dataset_combo
        current = combo.currentData() or self.settings.dataset
        combo.blockSignals(True)
        combo.clear()
        for name, description in datasets.items():
            combo.addItem(name, name)
            combo.setItemData(combo.count() - 1, description, 3)  # Qt.ToolTipRole
        if combo.findData(current) < 0:
            combo.addItem(Path(current).name, current)
        combo.setCurrentIndex(combo.findData(current))
        combo.blockSignals(False)

    def install_views(self) -> None:
        """Create the workspace and the real views in the docks (idempotent)."""
        if self.workspace is not None:
            return
        from .plots.curve_plot import CurvePlot
        from .plots.diagnostics import DiagnosticsPanel
        from .views.assembly_panel import AssemblyPanel
        from .workspace import Workspace

        ws = self._given_workspace or Workspace(self)
        self.workspace = ws
        self.undo_group.addStack(ws.undo_stack)
        self.undo_group.setActiveStack(ws.undo_stack)
        ws.undo_stack.cleanChanged.connect(self._on_clean_changed)
        ws.undo_stack.indexChanged.connect(self._on_plan_edited)
        ws.modelsChanged.connect(self._on_models_changed)
        self.assembly_panel = AssemblyPanel(ws)
        self.curve_plot = CurvePlot()
        self.diagnostics = DiagnosticsPanel()
        self.set_dock_widget(self.plan_dock, self.assembly_panel)
        self.set_dock_widget(self.curve_dock, self.curve_plot)
        self.set_dock_widget(self.diag_dock, self.diagnostics)
        self._install_evaluate_panel(ws)  # EvalMixin
        self._install_panes()
        self.curve_plot.lambdaDragged.connect(self.assembly_panel.apply_lambda)
        self.assembly_panel.selectedLambdaChanged.connect(self.curve_plot.set_lambda)
        ws.selectedStepChanged.connect(self.diagnostics.select_step)
        ws.selectedStepChanged.connect(self._on_step_selected)
        self._sync_panes()
        self.update_actions()

    # -- dirty state ---------------------------------------------------------------------------
    def is_dirty(self) -> bool:
        """Unsaved changes: plan edits (the undo stack is not clean) or models/settings changed."""
        ws = self.workspace
        return self._session_dirty or (ws is not None and not ws.undo_stack.isClean())

    def mark_session_dirty(self) -> None:
        """A change outside the undo stack (models opened, data set chosen)."""
        self._session_dirty = True
        self.autosaver.mark_dirty()
        self.update_title()

    def mark_clean(self) -> None:
        self._session_dirty = False
        if self.workspace is not None:
            self.workspace.undo_stack.setClean()
        self.autosaver.mark_clean()
        self.update_title()

    def project_name(self) -> str:
        return self.project_path.name if self.project_path else "Untitled"

    def project_snapshot(self) -> tuple[Project, Path | None]:
        """The current project (a copy: safe to write while the user keeps editing)."""
        data = str(self.dataset_combo.currentData() or self.settings.dataset)
        ws = self.workspace
        if ws is None:
            return Project(data=data), self.project_path
        plan = AssemblyPlan(ws.plan.base, dict(ws.plan.zoo), data, list(ws.plan.steps))
        ui = {"selected_step": ws.selected_step, "curve_grid": self.grid_spin.value()}
        return Project(plan, data, ui), self.project_path

    def _on_clean_changed(self, _clean: bool) -> None:
        self.update_title()

    def _on_plan_edited(self, _index: int) -> None:
        self.autosaver.mark_dirty()
        if self.diagnostics is not None:
            self.diagnostics.forget()  # diagnostics of the old plan would mislead
        self.update_actions()

    def _on_models_changed(self) -> None:
        self._sync_panes()
        self.update_actions()

    def _on_step_selected(self, index: int) -> None:
        self.update_actions()

    def _on_dataset_changed(self, _index: int) -> None:
        data = self.dataset_combo.currentData()
        if data:
            self.settings.dataset = str(data)
            if self.workspace is not None and self.workspace.base is not None:
                self.mark_session_dirty()

    def _on_grid_changed(self, value: int) -> None:
        self.settings.curve_grid = value

    # -- panes ---------------------------------------------------------------------------------
    def _install_panes(self) -> None:
        from .views.layer_tree_view import LayerTreePane, ZooTabs

        ws = self.workspace
        self.base_pane = LayerTreePane(ws, "base")  # follows workspace.base
        self.set_dock_widget(self.base_dock, self.base_pane)
        tabs = ZooTabs(ws)  # one pane per zoo model, kept in step with workspace.zoo
        tabs.setObjectName("zooTabs")
        tabs.setTabsClosable(True)
        tabs.setToolTip(self.zoo_tabs.toolTip())
        tabs.setCornerWidget(self.zoo_tabs.cornerWidget(), Qt.Corner.TopRightCorner)
        tabs.tabCloseRequested.connect(self._close_zoo_tab)
        old, self.zoo_tabs = self.zoo_tabs, tabs
        self.central.insertWidget(self.central.indexOf(old), tabs)
        self.central.removeWidget(old)
        old.deleteLater()
        for pane in (self.base_pane, tabs):
            pane.dropHint.connect(self._on_drop_hint)

    def _on_drop_hint(self, text: str, ok: bool) -> None:
        self.show_message(("\u2713 " if ok else "\u2717 ") + text if text else "", 4000)

    def _sync_panes(self) -> None:
        ws = self.workspace
        if ws is None:
            return
        self.base_dock.setWindowTitle(f"Base Model \u2014 {ws.base.name}" if ws.base is not None
                                      else "Base Model")
        self.show_central(ws.base is not None or bool(ws.zoo))

    def _close_zoo_tab(self, index: int) -> None:
        pane = self.zoo_tabs.widget(index)
        entry = getattr(pane, "entry", None)
        if entry is not None and self.workspace is not None and entry.name in self.workspace.zoo:
            # Undoable (with its steps): the undo stack's clean state marks the change.
            self.workspace.remove_zoo(entry.name)

    # -- run and export ------------------------------------------------------------------------
    def _models_by_path(self) -> dict[str, Any]:
        ws = self.workspace
        return {e.path_text: e.model for e in [ws.base, *ws.zoo.values()]}

    def _specs_by_path(self) -> dict[str, Any]:
        ws = self.workspace
        return {e.path_text: e.tree.spec for e in [ws.base, *ws.zoo.values()]}

    def _plan_copy(self, data: str) -> AssemblyPlan:
        plan = self.workspace.plan
        return AssemblyPlan(plan.base, dict(plan.zoo), data, list(plan.steps))

    def run(self) -> None:
        """Assemble the plan and compute the curve of the selected step in the worker."""
        ws = self.workspace
        if ws is None or ws.base is None or not ws.plan.steps:
            self.show_message("Run needs a base model and at least one step")
            return
        index = ws.selected_step if ws.selected_step >= 0 else len(ws.plan.steps) - 1
        data = str(self.dataset_combo.currentData() or "digits")
        step = ws.plan.steps[index]
        self.curve_plot.clear()
        self.curve_plot.set_title(f"Step {index + 1}: {step.label}  \u2022  {data}")
        self.diagnostics.forget()
        factory = partial(tasks.run_step_job, plan=self._plan_copy(data), step_index=index,
                          data=data, grid=self.grid_spin.value(), models=self._models_by_path(),
                          specs=self._specs_by_path())
        self.submit(factory, f"Running step {index + 1}", self._run_done)

    def _run_done(self, result: tasks.RunResult) -> None:
        self._last_run = result
        self.curve_plot.set_result(result.curve)
        c = result.curve
        self.show_message(f"Run finished in {result.seconds:.1f} s \u2014 mean loss naive "
                          f"{c.naive.mean_loss:.3f}, aligned {c.aligned.mean_loss:.3f}; barrier "
                          f"naive {c.naive.barrier:.3f}, aligned {c.aligned.barrier:.3f}", 20000)

    def choose_merged_output(self) -> None:
        ws = self.workspace
        if ws is None or ws.base is None or not ws.plan.steps:
            return
        start = str(Path(self.settings.last_dir) / f"{ws.base.name}-merged.safetensors")
        file, _ = QFileDialog.getSaveFileName(self, "Export Merged Model", start,
                                              "Safetensors (*.safetensors)")
        if file:
            if not file.endswith(".safetensors"):
                file += ".safetensors"
            self.export_merged(Path(file))

    def export_merged(self, out: Path) -> None:
        """Assemble the plan and save the merged model (with provenance) to ``out``."""
        data = str(self.dataset_combo.currentData() or "digits")
        factory = partial(tasks.save_merged_job, plan=self._plan_copy(data), out=out,
                          models=self._models_by_path(), specs=self._specs_by_path())
        self.submit(factory, f"Exporting {out.name}", self._merged_saved)

    def _merged_saved(self, result: Any) -> None:
        self.show_message(f"Saved the merged model to {result.out}", 15000)
