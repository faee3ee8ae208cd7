"""Opening and saving: model files, projects, recent files, the demo zoo, crash recovery.

:class:`FilesMixin` is mixed into :class:`~mal_desktop.gui.main_window.MainWindow` next to
:class:`~mal_desktop.gui.session.SessionMixin` (jobs, start-up, run) and
:class:`~mal_desktop.gui.session_eval.EvalMixin` (evaluation, study). File contents are read in
the worker (``tasks.load_models_job``); only small JSON files (projects) are read here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog

from ..core.errors import MalError
from ..core.project.demo import pick_demo_models, suggest_first_step
from ..core.project.document import (PROJECT_SUFFIX, Project, ProjectError, load_project,
                                     save_project)
from ..core.project.recovery import discard_recovery, find_recoveries, load_recovery
from . import tasks
from .dialogs import ask
from .dialogs.demo_zoo import DemoZooDialog
from .log import report_error, report_exception

LOG = logging.getLogger("mal_desktop.files")
MODEL_SUFFIXES = (".safetensors", ".pt2", ".pt", ".pth", ".bin")
MODEL_FILTER = "Models (*.safetensors *.pt2 *.pt *.pth *.bin);;All files (*)"
PROJECT_FILTER = f"MAL projects (*{PROJECT_SUFFIX})"

__all__ = ["FilesMixin", "MODEL_SUFFIXES", "PROJECT_SUFFIX"]


class FilesMixin:
    """Opening and saving for the main window (see module docstring)."""

    # -- opening models and projects ---------------------------------------------------------------
    def _ask_open(self, title: str, filter_: str, many: bool = False) -> list[str]:
        start = self.settings.last_dir
        if many:
            files, _ = QFileDialog.getOpenFileNames(self, title, start, filter_)
        else:
            file, _ = QFileDialog.getOpenFileName(self, title, start, filter_)
            files = [file] if file else []
        if files:
            self.settings.last_dir = str(Path(files[0]).parent)
        return files

    def choose_base(self) -> None:
        files = self._ask_open("Open Base Model", MODEL_FILTER)
        if files:
            self.load_models([tasks.LoadRequest("base", Path(files[0]).stem, files[0])])

    def choose_zoo(self) -> None:
        files = self._ask_open("Add Zoo Models", MODEL_FILTER, many=True)
        if files:
            self.load_models([tasks.LoadRequest("zoo", Path(f).stem, f) for f in files])

    def choose_project(self) -> None:
        files = self._ask_open("Open Project", PROJECT_FILTER)
        if files:
            self.open_project(files[0])

    def open_recent(self, path: str) -> None:
        if not Path(path).exists():
            self.settings.remove_recent_file(path)
            self.welcome.set_recent(self.settings.recent_files)
            report_error(f"{path}: the file no longer exists", parent=self)
            return
        self.open_paths([path])

    def open_paths(self, paths: Iterable[str]) -> None:
        """Open files given on the command line, dropped or picked from the recent list.

        A project replaces the session; model files become the base (the first, when there
        is no base yet) and zoo models.
        """
        paths = [str(Path(p).expanduser()) for p in paths]
        projects = [p for p in paths if p.endswith(PROJECT_SUFFIX)]
        if projects:
            if len(paths) > 1:
                self.show_message("Opening the project only; open other files afterwards")
            self.open_project(projects[0])
            return
        has_base = self.workspace is not None and self.workspace.base is not None
        requests = []
        for i, p in enumerate(paths):
            role = "base" if i == 0 and not has_base else "zoo"
            requests.append(tasks.LoadRequest(role, Path(p).stem, p))
        if requests:
            self.load_models(requests)

    def load_models(self, requests: list[tasks.LoadRequest]) -> None:
        """Load model files in the worker, then add them to the workspace."""
        n = len(requests)
        name = f"Loading {Path(requests[0].path).name}" if n == 1 else f"Loading {n} models"
        self.submit(partial(tasks.load_models_job, requests=tuple(requests)), name,
                    partial(self._models_loaded, [r.path for r in requests]))

    def _models_loaded(self, paths: list[str], entries: tuple) -> None:
        self._apply_entries(entries)
        for p in paths:
            self.settings.add_recent_file(p)
        self.mark_session_dirty()
        self.show_message(f"Opened {', '.join(e.name for _, e in entries)}")

    def _apply_entries(self, entries: tuple) -> None:
        for role, entry in entries:
            if role == "base":
                self.workspace.set_base(entry)
            else:
                self.workspace.add_zoo(entry)

    def new_project(self) -> None:
        if self.maybe_save():
            self.workspace.clear()
            self.project_path = None
            self._last_run = None
            if self.curve_plot is not None:
                self.curve_plot.clear()
                self.diagnostics.clear()
            self.mark_clean()

    def maybe_save(self) -> bool:
        """Ask about unsaved changes; False when the user cancelled (or saving failed)."""
        if not self.is_dirty():
            return True
        answer = ask.unsaved_changes(self, self.project_name())
        return answer == ask.DISCARD or (answer == ask.SAVE and self.save_project())

    def open_project(self, path: str | Path) -> None:
        if not self.maybe_save():
            return
        try:
            project = load_project(path)
        except ProjectError as exc:
            report_exception(exc, "Cannot open the project", self)
            return
        self._load_project(project, Path(path).resolve(), dirty=False)

    def _load_project(self, project: Project, path: Path | None, dirty: bool,
                      after: Callable[[], None] | None = None) -> None:
        plan = project.plan
        requests = [tasks.LoadRequest("base", Path(plan.base).stem, plan.base)] if plan.base else []
        requests += [tasks.LoadRequest("zoo", n, p) for n, p in plan.zoo.items()]
        label = path.name if path else "the recovered project"
        self.submit(partial(tasks.load_models_job, requests=tuple(requests)),
                    f"Opening {label}", partial(self._project_loaded, project, path, dirty, after))

    def _project_loaded(self, project: Project, path: Path | None, dirty: bool,
                        after: Callable[[], None] | None, entries: tuple) -> None:
        ws = self.workspace
        ws.clear()
        self._apply_entries(entries)
        ws.reset_plan(project.plan)
        if self.dataset_combo.findData(project.data) < 0:
            self.dataset_combo.addItem(Path(project.data).name, project.data)
        self.dataset_combo.setCurrentIndex(self.dataset_combo.findData(project.data))
        grid = project.ui.get("curve_grid")
        if isinstance(grid, int):
            self.grid_spin.setValue(grid)
        step = project.ui.get("selected_step")
        if isinstance(step, int):
            ws.select_step(step)
        self.project_path = path
        self._last_run = None
        if self.curve_plot is not None:
            self.curve_plot.clear()
            self.diagnostics.clear()
        self.mark_clean()
        if dirty:
            self.mark_session_dirty()
        if path is not None and not dirty:
            self.settings.add_recent_file(path)
        self.show_message(f"Opened {path.name}" if path is not None and not dirty else
                          "Restored the autosaved project: save it to keep it")
        if after is not None:
            after()

    def save_project(self) -> bool:
        """Save to the current project file (asks for one the first time); True on success."""
        if self.project_path is None:
            return self.save_project_as()
        return self._write_project(self.project_path)

    def save_project_as(self) -> bool:
        start = str(self.project_path or Path(self.settings.last_dir) / f"untitled{PROJECT_SUFFIX}")
        file, _ = QFileDialog.getSaveFileName(self, "Save Project", start, PROJECT_FILTER)
        if not file:
            return False
        return self._write_project(Path(file))

    def _write_project(self, path: Path) -> bool:
        project, _ = self.project_snapshot()
        try:
            written = save_project(project, path)
        except ProjectError as exc:
            report_exception(exc, "Cannot save the project", self)
            return False
        self.project_path = written.resolve()
        self.settings.last_dir = str(written.parent)
        self.settings.add_recent_file(written)
        self.mark_clean()
        self.show_message(f"Saved {written}")
        return True

    # -- demo zoo ----------------------------------------------------------------------------
    def open_demo(self) -> None:
        """Open the demo zoo: straight away when built, else offer to build it."""
        self.submit(tasks.demo_status_job, "Looking for the demo zoo",
                    partial(self._show_demo_dialog, offer=False))

    def build_and_open_demo(self) -> None:
        """``--demo``: open the demo zoo, building it first (with progress) when needed."""
        self.submit(tasks.demo_status_job, "Looking for the demo zoo",
                    partial(self._show_demo_dialog, offer=False, build=True))

    def _show_demo_dialog(self, status: tasks.DemoStatus, offer: bool,
                          build: bool = False) -> None:
        if status.index is not None and not offer:
            self._open_demo_index(status.index)
            return
        dialog = DemoZooDialog(self, status.folder, ready=status.index is not None)
        self.demo_dialog = dialog
        dialog.accepted_build.connect(partial(self._demo_accepted, dialog, status))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        if build:  # asked for on the command line: no need to ask again
            self._demo_accepted(dialog, status)

    def _demo_accepted(self, dialog: DemoZooDialog, status: tasks.DemoStatus) -> None:
        if status.index is not None:
            dialog.accept()
            self._open_demo_index(status.index)
            return
        if not self.maybe_save():
            dialog.reject()
            return
        self.submit(partial(tasks.build_demo_zoo_job, folder=status.folder),
                    "Building the demo zoo", self._open_demo_index)
        dialog.attach(self.runner)

    def _open_demo_index(self, index: Any) -> None:
        try:
            base, zoo = pick_demo_models(index)
        except MalError as exc:
            report_exception(exc, "Cannot open the demo zoo", self)
            return
        requests = [tasks.LoadRequest("base", base.name, str(index.path_of(base.name)))]
        requests += [tasks.LoadRequest("zoo", z.name, str(index.path_of(z.name))) for z in zoo]
        self.submit(partial(tasks.load_models_job, requests=tuple(requests)),
                    "Opening the demo zoo", self._demo_loaded)

    def _demo_loaded(self, entries: tuple) -> None:
        ws = self.workspace
        ws.clear()
        self._apply_entries(entries)
        self.project_path = None
        # The workspace's cached pre-flight check: the panes ask the same questions next.
        step = suggest_first_step(ws.base.tree if ws.base is not None else None,
                                  {name: e.tree for name, e in ws.zoo.items()},
                                  lambda name, layer, base: ws.check(name, layer, base).ok)
        if step is not None:
            ws.add_step(step)
        self.mark_clean()  # the demo is one click away: nothing to lose yet
        self.show_message("Demo zoo open: drag a layer from a zoo tab onto a base layer, "
                          "or press Run (F5) for the example step", 20000)

    # -- recovery -----------------------------------------------------------------------------
    def check_recovery(self) -> bool:
        """Offer to restore autosaved work of a session that crashed; True when restoring."""
        data_dir = self.settings.data_dir()
        for recovery in find_recoveries(data_dir):
            answer = ask.offer_recovery(self, recovery.describe())
            if answer == ask.LATER:
                return False
            if answer == ask.DISCARD:
                recovery.path.unlink(missing_ok=True)
                continue
            try:
                project = load_recovery(recovery)
            except ProjectError as exc:
                report_exception(exc, "Cannot restore the autosaved project", self)
                return False
            self._load_project(project, recovery.project_path, dirty=True,
                               after=partial(discard_recovery, data_dir, recovery.pid))
            return True
        return False
