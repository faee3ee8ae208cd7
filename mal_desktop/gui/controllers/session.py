"""The editing session: the workspace, the project file it belongs to, unsaved state, autosave,
the engine, and the curve settings that a project stores (data set, grid).

Unsaved state has two sources: plan edits (the workspace's undo stack is not clean) and changes
outside the undo stack (models opened, the data set chosen; :meth:`SessionController.mark_dirty`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal, Slot

from ...core.merge.plan import AssemblyPlan
from ...core.project.document import Project
from .. import tasks
from ..autosave import Autosaver
from ..job_queue import JobQueue
from ..settings import Settings

if TYPE_CHECKING:  # the workspace imports the engine: created once it is up
    from ..workspace import Workspace

LOG = logging.getLogger("mal_desktop.session")
GRID_MIN, GRID_MAX = 3, 101  # lambda values on a curve (0 and 1 included)


class SessionController(QObject):
    """The session's state and its unsaved marker.

    Parameters: settings - the settings facade (data set, grid, data folder for autosave);
    jobs - the job queue (the engine warm-up runs there); workspace - an existing Workspace
    (tests); by default one is made by :meth:`install_workspace`.
    Signals: ``stateChanged()`` - the title or the enabled actions may differ (unsaved state,
    project path, models, plan, selection, engine); ``engineReady(EngineInfo)``;
    ``workspaceReady(Workspace)``; ``planEdited()`` - an edit went through the undo stack;
    ``resultsForgotten()`` - results of the old session (curve, diagnostics) no longer apply;
    ``dataChanged(str)`` / ``gridChanged(int)`` - set by a project rather than by the user.
    """

    stateChanged = Signal()
    engineReady = Signal(object)
    workspaceReady = Signal(object)
    planEdited = Signal()
    resultsForgotten = Signal()
    dataChanged = Signal(str)
    gridChanged = Signal(int)

    def __init__(self, settings: Settings, jobs: JobQueue, workspace: "Workspace | None" = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.jobs = jobs
        self.workspace: Workspace | None = None
        self.engine: tasks.EngineInfo | None = None
        self.data = settings.dataset
        self.grid = settings.curve_grid
        self._given_workspace = workspace
        self._project_path: Path | None = None
        self._dirty = False
        self.autosaver = Autosaver(settings.data_dir(), self.snapshot, parent=self)

    # -- engine and workspace ---------------------------------------------------------------
    def start_engine(self) -> None:
        """Import the engine (torch, scipy) in the worker; ``engineReady`` follows."""
        self.jobs.submit(tasks.warmup_job, "Starting the engine", self._engine_ready)

    def _engine_ready(self, info: tasks.EngineInfo) -> None:
        self.engine = info
        LOG.info("engine ready in %.2f s on %s", info.seconds, info.device)
        self.engineReady.emit(info)
        self.stateChanged.emit()

    @property
    def has_given_workspace(self) -> bool:
        """A workspace was passed in (tests): it can be installed before the engine is up."""
        return self._given_workspace is not None

    def install_workspace(self) -> "Workspace":
        """The session's workspace, created (or the given one adopted) on the first call."""
        if self.workspace is not None:
            return self.workspace
        from ..workspace import Workspace

        ws = self._given_workspace or Workspace(self)
        self.workspace = ws
        ws.undo_stack.cleanChanged.connect(self._on_clean_changed)
        ws.undo_stack.indexChanged.connect(self._on_plan_edited)
        ws.modelsChanged.connect(self.stateChanged)
        ws.selectedStepChanged.connect(self._on_step_selected)
        self.workspaceReady.emit(ws)
        self.stateChanged.emit()
        return ws

    def replace_workspace(self, project_path: Path | None) -> None:
        """Empty the workspace (models, plan, undo history) for a new, opened or demo session."""
        if self.workspace is not None:
            self.workspace.clear()
        self.project_path = project_path

    def forget_results(self) -> None:
        """Tell the views that results of the previous session no longer apply."""
        self.resultsForgotten.emit()

    # -- project file and unsaved state -----------------------------------------------------
    @property
    def project_path(self) -> Path | None:
        """The project file this session is saved to (None: untitled)."""
        return self._project_path

    @project_path.setter
    def project_path(self, path: Path | None) -> None:
        self._project_path = path
        self.stateChanged.emit()

    def project_name(self) -> str:
        """The project file's name, or "Untitled"."""
        return self._project_path.name if self._project_path else "Untitled"

    def is_dirty(self) -> bool:
        """Unsaved changes: plan edits (the undo stack is not clean) or models/settings changed."""
        ws = self.workspace
        return self._dirty or (ws is not None and not ws.undo_stack.isClean())

    def mark_dirty(self) -> None:
        """A change outside the undo stack (models opened, data set chosen)."""
        self._dirty = True
        self.autosaver.mark_dirty()
        self.stateChanged.emit()

    def mark_clean(self) -> None:
        """Saved (or nothing worth keeping): no unsaved marker, no recovery file."""
        self._dirty = False
        if self.workspace is not None:
            self.workspace.undo_stack.setClean()
        self.autosaver.mark_clean()
        self.stateChanged.emit()

    def snapshot(self) -> tuple[Project, Path | None]:
        """The current project (a copy: safe to write while the user keeps editing) and its
        file."""
        ws = self.workspace
        if ws is None:
            return Project(data=self.data), self._project_path
        plan = ws.plan.copy(self.data)  # with the outputs chosen as the logits
        ui = {"selected_step": ws.selected_step, "curve_grid": self.grid}
        return Project(plan, self.data, ui), self._project_path

    def plan_copy(self, data: str | None = None) -> AssemblyPlan:
        """A private copy of the plan (for a job to read) with data set ``data`` (default: the
        session's)."""
        plan = self.workspace.plan if self.workspace is not None else AssemblyPlan()
        return plan.copy(data or self.data)

    # -- curve settings ---------------------------------------------------------------------
    def set_data(self, data: str) -> None:
        """Use data set ``data`` (registry name or .npz path) for curves; remembered in the
        settings, and an unsaved change once a model is open."""
        if not data or data == self.data:
            return
        self.data = data
        self.settings.dataset = data
        self.dataChanged.emit(data)
        if self.workspace is not None and self.workspace.base is not None:
            self.mark_dirty()

    def set_grid(self, points: int) -> None:
        """Use ``points`` lambda values for curves (clamped to GRID_MIN..GRID_MAX; remembered in
        the settings, and an unsaved change of the project once a model is open: the project
        keeps it)."""
        points = max(GRID_MIN, min(GRID_MAX, int(points)))
        if points == self.grid:
            return
        self.grid = points
        self.settings.curve_grid = points
        self.gridChanged.emit(points)
        if self.workspace is not None and self.workspace.base is not None:
            self.mark_dirty()

    # -- undo stack ---------------------------------------------------------------------------
    @Slot(bool)
    def _on_clean_changed(self, _clean: bool) -> None:
        self.stateChanged.emit()

    @Slot(int)
    def _on_plan_edited(self, _index: int) -> None:
        self.autosaver.mark_dirty()
        self.planEdited.emit()
        self.stateChanged.emit()

    @Slot(int)
    def _on_step_selected(self, _index: int) -> None:
        self.stateChanged.emit()
