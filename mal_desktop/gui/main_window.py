"""The main window: layout (docks, menus, toolbar, status bar), title, closing, drag and drop.

What the window *does* lives in controllers it owns and wires to its widgets (gui/controllers):
``session`` (workspace, project path, unsaved state, autosave, engine), ``files`` (open, save,
recent files, demo zoo, recovery), ``runs`` (curve of a step, merged-model export) and
``evaluation`` (evaluation matrix, MAL study). All of them submit long work to the one job
queue, ``jobs``. The window turns their signals into what the user sees.

Start-up is staged so the window appears fast: the constructor builds only light widgets (the
welcome page, empty docks). :meth:`start_up` then imports the engine (torch, scipy) in the
worker thread and, once that is done, installs the real views (which import the engine too,
now at no cost) and handles the files, demo or recovery asked for.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt, QUrl, Slot
from PySide6.QtGui import (QAction, QCloseEvent, QDesktopServices, QDragEnterEvent,
                           QDragMoveEvent, QDropEvent, QKeySequence, QUndoGroup)
from PySide6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QStackedWidget, QTabWidget,
                               QToolBar, QToolButton, QWidget)

from ..core.progress import ProgressEvent
from .actions import Actions
from .controllers.evaluation import EvaluationController
from .controllers.files import FilesController
from .controllers.run import RunController
from .controllers.session import SessionController
from .curve_settings import CurveSettings
from .dialogs import ask
from .dialogs.about import AboutDialog
from .dock_layout import DockLayout
from .icons import app_icon
from .job_queue import JobQueue
from .log import log_file, set_error_parent
from .recent_menu import RecentFilesMenu
from .settings import Settings
from .status_bar import JobStatusBar
from .theme import ThemeController
from .welcome import WelcomePage

if TYPE_CHECKING:  # the engine's modules: imported once it is up
    from . import tasks
    from .views.workspace_views import WorkspaceViews
    from .workspace import Workspace

LOG = logging.getLogger("mal_desktop.window")
APP_NAME = "MAL Desktop"


class MainWindow(QMainWindow):
    """The application window.

    Parameters: settings - the typed settings facade (geometry, recent files, theme, ...);
    workspace - an existing Workspace (tests); by default one is made when the engine is up;
    theme - the ThemeController to switch from the View menu (None: no theme menu effect).
    Attributes: the controllers ``jobs``, ``session``, ``files``, ``runs``, ``evaluation``;
    ``views`` (the WorkspaceViews; None until the engine is up); ``zoo_tabs`` (the central
    area's tabs: a placeholder until then).
    """

    def __init__(self, settings: Settings, workspace: "Workspace | None" = None,
                 theme: ThemeController | None = None) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.settings = settings
        self.theme = theme
        if theme is not None:
            theme.changed.connect(self._on_theme_changed)
        self.jobs = JobQueue(parent=self)
        self.jobs.error_parent = self
        self.session = SessionController(settings, self.jobs, workspace, self)
        self.files = FilesController(self.session, self.jobs, settings, self, self)
        self.runs = RunController(self.session, self.jobs, self, self)
        self.evaluation = EvaluationController(self.jobs, settings, self, self)
        self.actions = Actions(self)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks
                            | QMainWindow.DockOption.AllowTabbedDocks)
        self._shut_down = False
        self._was_shown = False
        self._startup: tuple[list[str], str | None] | None = None
        self.views: WorkspaceViews | None = None  # made once the engine is up
        # One group: undo/redo follow whichever stack is active (the workspace's, once made).
        self.undo_group = QUndoGroup(self)
        self.undo_action, self.redo_action = self.actions.undo_actions(self.undo_group, self)
        self._build_central()
        self._build_docks()
        self._build_toolbar()
        self._build_menus()
        self._build_status_bar()
        self._connect()
        self.dock_layout.restore()
        set_error_parent(self)
        self.update_title()
        self.update_actions()

    @property
    def workspace(self) -> "Workspace | None":
        """The session's workspace (None until the engine is up)."""
        return self.session.workspace

    # -- construction -------------------------------------------------------------------------
    def _build_central(self) -> None:
        a = self.actions
        self.welcome = WelcomePage([a.open_demo, a.open_base, a.open_project])
        self.welcome.set_recent(self.settings.recent_files)
        self.zoo_tabs = QTabWidget()
        self.zoo_tabs.setObjectName("zooTabs")
        self.zoo_tabs.setDocumentMode(True)
        self.zoo_tabs.setToolTip("Zoo models: drag a layer onto a layer of the base model")
        add = QToolButton()
        add.setDefaultAction(self.actions.add_zoo)
        add.setAutoRaise(True)
        self.zoo_tabs.setCornerWidget(add, Qt.Corner.TopRightCorner)
        self.central = QStackedWidget()
        self.central.addWidget(self.welcome)
        self.central.addWidget(self.zoo_tabs)
        self.setCentralWidget(self.central)

    def _build_docks(self) -> None:
        self.dock_layout = DockLayout(self, self.settings)
        d = self.dock_layout.docks
        self.base_dock, self.plan_dock, self.curve_dock = d["base"], d["plan"], d["curve"]
        self.diag_dock, self.evaluate_dock = d["diagnostics"], d["evaluate"]

    def _build_toolbar(self) -> None:
        a = self.actions
        bar = QToolBar("Main Toolbar", self)
        bar.setObjectName("mainToolBar")
        bar.setIconSize(QSize(20, 20))
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in (a.open_base, a.add_zoo, a.open_project, a.save_project):
            bar.addAction(action)
        # Low priority: icon only in the toolbar (undo/redo texts name the edit and get long).
        for action in (self.undo_action, self.redo_action, a.cancel):
            action.setPriority(QAction.Priority.LowPriority)
        bar.addSeparator()
        bar.addAction(self.undo_action)
        bar.addAction(self.redo_action)
        bar.addSeparator()
        bar.addAction(a.add_step)
        bar.addAction(a.run)
        bar.addAction(a.cancel)
        bar.addSeparator()
        self.curve_settings = CurveSettings(self.session, self)
        self.dataset_combo = self.curve_settings.dataset_combo
        self.grid_spin = self.curve_settings.grid_spin
        bar.addWidget(QLabel(" Data: "))
        bar.addWidget(self.dataset_combo)
        bar.addWidget(QLabel("  Curve: "))
        bar.addWidget(self.grid_spin)
        bar.addSeparator()
        bar.addAction(a.save_merged)
        self.toolbar = bar
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    def _build_menus(self) -> None:
        a = self.actions
        menu = self.menuBar()
        file = menu.addMenu("&File")
        file.addActions([a.new_project, a.open_base, a.add_zoo, a.open_project])
        self.recent_menu = RecentFilesMenu(self.settings, self)
        self.recent_menu.fileChosen.connect(self.files.open_recent)
        self.recent_menu.cleared.connect(self._on_recent_changed)
        file.addMenu(self.recent_menu)
        file.addActions([a.open_demo, a.open_lm_demo])
        file.addSeparator()
        file.addActions([a.save_project, a.save_project_as, a.save_merged])
        file.addSeparator()
        file.addAction(a.quit)
        edit = self.edit_menu = menu.addMenu("&Edit")
        edit.addActions([self.undo_action, self.redo_action])
        edit.addSeparator()
        edit.addAction(a.add_step)  # the plan's step actions join once its panel exists
        run = menu.addMenu("&Run")
        run.addActions([a.run, a.cancel])
        run.addSeparator()
        run.addActions([a.evaluate, a.run_study])
        view = menu.addMenu("&View")
        for dock in (self.base_dock, self.plan_dock, self.curve_dock, self.diag_dock,
                     self.evaluate_dock):
            view.addAction(dock.toggleViewAction())
        view.addAction(self.toolbar.toggleViewAction())
        view.addSeparator()
        go = view.addMenu("&Go to Panel")
        go.addActions(a.focus_actions)
        view.addSeparator()
        theme = view.addMenu("&Theme")
        theme.addActions([a.theme_system, a.theme_light, a.theme_dark])
        mode = self.settings.theme
        checked = {"system": a.theme_system, "light": a.theme_light, "dark": a.theme_dark}[mode]
        checked.setChecked(True)
        view.addAction(a.reset_layout)
        helpm = menu.addMenu("&Help")
        helpm.addActions([a.open_log, a.about])

    def _build_status_bar(self) -> None:
        bar = JobStatusBar(self.actions.cancel, self)
        self.setStatusBar(bar)
        self.progress_bar = bar.progress_bar
        self.cancel_button = bar.cancel_button
        self.device_label = bar.device_label

    def _connect(self) -> None:
        a, files = self.actions, self.files
        for key, slot in (("new_project", files.new_project), ("open_base", files.choose_base),
                          ("add_zoo", files.choose_zoo), ("open_project", files.choose_project),
                          ("open_demo", files.open_demo), ("open_lm_demo", files.open_lm_demo),
                          ("save_project", files.save_project),
                          ("save_project_as", files.save_project_as),
                          ("save_merged", self.runs.choose_merged_output), ("quit", self.close),
                          ("run", self.runs.run), ("cancel", self.jobs.cancel),
                          ("evaluate", self.evaluation.evaluate),
                          ("run_study", self.evaluation.choose_study),
                          ("reset_layout", self.reset_layout), ("about", self.show_about),
                          ("open_log", self.open_log_folder), ("add_step", self.add_step)):
            a[key].triggered.connect(slot)
        for action in a.focus_actions:
            action.triggered.connect(self._on_focus_action)
        a.theme_group.triggered.connect(self._on_theme_action)
        self.welcome.recentActivated.connect(files.open_recent)
        self.jobs.progress.connect(self._on_job_progress)
        self.jobs.busyChanged.connect(self._on_busy_changed)
        self.jobs.jobEnded.connect(self.update_actions)
        s = self.session
        s.stateChanged.connect(self._on_state_changed)
        s.engineReady.connect(self._on_engine_ready)
        s.workspaceReady.connect(self._on_workspace_ready)
        files.recentChanged.connect(self._on_recent_changed)
        self.evaluation.panelWanted.connect(self._show_evaluate_dock)
        for controller in (self.jobs, files, self.runs, self.evaluation):
            controller.message.connect(self.show_message)

    # -- start-up and the engine's views ----------------------------------------------------------
    def start_up(self, files: Iterable[str] = (), demo: bool | str = False) -> None:
        """After the window shows: start the engine, install views, then open what was asked
        (``demo``: True or "digits" for the demo zoo, "language" for the language one)."""
        self._startup = ([str(f) for f in files], "digits" if demo is True else demo or None)
        if self.session.has_given_workspace:
            self.install_views()
        self.session.start_engine()

    @Slot(object)
    def _on_engine_ready(self, info: "tasks.EngineInfo") -> None:
        self.statusBar().set_device(info.device)
        self.curve_settings.set_datasets(info.datasets)
        self.install_views()
        # Start-up garbage is done: freeze it so the collector never walks it again (a full
        # collection with torch loaded can pause the GUI for 100+ ms).
        gc.collect()
        gc.freeze()
        files, demo = self._startup or ([], None)
        self._startup = None
        self.files.open_at_startup(files, demo)

    @Slot()
    def _order_tab_chain(self) -> None:
        """Tab walks the panels in screen order: the toolbar, the base tree, the zoo trees,
        the plan, then the bottom panels. Qt's chain is the order widgets were placed in: the
        zoo trees, placed as their models open, came after everything else."""
        areas = [self.toolbar, self.base_dock, self.zoo_tabs, self.plan_dock, self.curve_dock,
                 self.diag_dock, self.evaluate_dock]
        walk, widget = [], self.nextInFocusChain()
        while widget is not self and len(walk) < 100_000:
            walk.append(widget)
            widget = widget.nextInFocusChain()
        chain = [w for area in areas for w in walk
                 if area.isAncestorOf(w) and w.focusPolicy() & Qt.FocusPolicy.TabFocus]
        for first, second in zip(chain, chain[1:]):
            QWidget.setTabOrder(first, second)

    def install_views(self) -> None:
        """Create the session's workspace and the real views in the docks (idempotent)."""
        self.session.install_workspace()  # workspaceReady builds the views the first time

    @Slot(object)
    def _on_workspace_ready(self, ws: "Workspace") -> None:
        from .views.workspace_views import WorkspaceViews

        self.undo_group.addStack(ws.undo_stack)
        self.undo_group.setActiveStack(ws.undo_stack)
        views = self.views = WorkspaceViews(ws, self.actions, self.runs,
                                            lambda: self.session.data, self)
        self.set_dock_widget(self.base_dock, views.base_pane)
        self.set_dock_widget(self.plan_dock, views.assembly_panel)
        self.set_dock_widget(self.curve_dock, views.curve_plot)
        self.set_dock_widget(self.diag_dock, views.diagnostics)
        self.set_dock_widget(self.evaluate_dock, views.evaluate_panel)
        # found in the menu too (their keys act in the step list, where the selection is)
        panel = views.assembly_panel
        self.edit_menu.addActions([panel.up_action, panel.down_action, panel.remove_action])
        tabs, old = views.zoo_tabs, self.zoo_tabs
        tabs.setToolTip(old.toolTip())
        tabs.setCornerWidget(old.cornerWidget(), Qt.Corner.TopRightCorner)
        self.central.insertWidget(self.central.indexOf(old), tabs)
        self.central.removeWidget(old)
        old.deleteLater()
        self.zoo_tabs = tabs
        self._order_tab_chain()
        ws.modelsChanged.connect(self._order_tab_chain)  # after the panes follow the models
        self.evaluation.set_panel(views.evaluate_panel)
        views.evaluate_panel.follow_data(self.session.data)
        self.session.dataChanged.connect(views.evaluate_panel.follow_data)
        views.dropHint.connect(self._on_drop_hint)
        views.pairChanged.connect(self._update_add_step)
        ws.modelsChanged.connect(self._sync_panes)
        ws.modelsChanged.connect(self._fit_data_choices)
        self.session.resultsForgotten.connect(views.clear_results)
        self._sync_panes()
        self._fit_data_choices()
        self.update_actions()

    @Slot()
    def _fit_data_choices(self) -> None:
        base = self.workspace.base if self.workspace is not None else None
        self.curve_settings.fit_to(base.name if base else None,
                                   None if base is None else base.model.id_range() is not None)

    @Slot(str, bool)
    def _on_drop_hint(self, text: str, ok: bool) -> None:
        self.show_message(("\u2713 " if ok else "\u2717 ") + text if text else "", 4000)

    @Slot()
    def _sync_panes(self) -> None:
        ws = self.workspace
        if ws is None:
            return
        self.base_dock.setWindowTitle(f"Base Model \u2014 {ws.base.name}" if ws.base is not None
                                      else "Base Model")
        self.show_central(ws.base is not None or bool(ws.zoo))

    # -- what the controllers report ---------------------------------------------------------------
    @Slot(object)
    def _on_job_progress(self, event: ProgressEvent) -> None:
        self.statusBar().show_progress(event)

    @Slot()
    def _on_state_changed(self) -> None:
        self.update_title()
        self.update_actions()

    @Slot()
    def _show_evaluate_dock(self) -> None:
        self.evaluate_dock.show()
        self.evaluate_dock.raise_()

    @Slot()
    def _on_recent_changed(self) -> None:
        self.welcome.set_recent(self.settings.recent_files)

    # -- layout ---------------------------------------------------------------------------------
    def save_layout(self) -> None:
        """Store geometry and dock layout in the settings."""
        self.dock_layout.save()

    @Slot()
    def reset_layout(self) -> None:
        """Put docks and toolbar back in their default places and sizes."""
        self.dock_layout.reset()
        self.toolbar.show()

    @Slot()
    def _on_focus_action(self) -> None:
        name = self.sender().objectName().removeprefix("action_focus_")
        if self.views is not None:
            if name == "zoo":
                self.show_central(True)
            self.dock_layout.focus(name, self.views.focus_widget(name))

    @Slot()
    def add_step(self) -> None:
        """Add Step: the selected zoo layer into the selected base layer (undoable)."""
        if self.views is not None:
            self.views.add_selected_step()

    @Slot()
    def _update_add_step(self) -> None:
        # Enabled with a base and a zoo model (without a selected pair, it says what to select).
        a, ws = self.actions.add_step, self.workspace
        pair = self.views.selected_pair() if self.views is not None else None
        a.setEnabled(ws is not None and ws.base is not None and bool(ws.zoo))
        a.setToolTip(f"Add Step: {pair.source}:{pair.source_layer} \u2192 {pair.base_layer} "
                     f"({a.shortcut().toString()})" if pair is not None else a.statusTip())

    def set_dock_widget(self, dock: QDockWidget, widget: QWidget) -> None:
        """Replace a dock's placeholder by the real view."""
        old = dock.widget()
        dock.setWidget(widget)
        if old is not None and old is not widget:
            old.deleteLater()

    def show_central(self, has_models: bool) -> None:
        """The zoo tabs when models are open, the welcome page otherwise."""
        self.central.setCurrentWidget(self.zoo_tabs if has_models else self.welcome)
        if not has_models:
            self.welcome.set_recent(self.settings.recent_files)

    # -- title, actions, status -----------------------------------------------------------------
    def update_title(self) -> None:
        """"*name - MAL Desktop"; the '*' marks unsaved changes."""
        name = self.session.project_name()
        self.setWindowTitle(f"{'*' if self.session.is_dirty() else ''}{name} \u2014 {APP_NAME}")

    def update_actions(self) -> None:
        """Enable what makes sense now."""
        a = self.actions
        busy = self.jobs.is_running()
        ws = self.workspace
        why_not = self.runs.why_not_run()
        a.run.setEnabled(not why_not and not busy)
        a.run.setToolTip(why_not or a.run.statusTip() + " (F5)")
        a.save_merged.setEnabled(not why_not and not busy)
        self._update_add_step()
        a.cancel.setEnabled(busy)
        a.evaluate.setEnabled(ws is not None and (ws.base is not None or bool(ws.zoo))
                              and not busy)
        a.run_study.setEnabled(ws is not None and not busy)
        a.new_project.setEnabled(ws is not None)
        # a project is a base and what is merged into it (one without a base cannot be opened)
        savable = ws is not None and ws.base is not None
        for key in ("save_project", "save_project_as"):
            a[key].setEnabled(savable)
            keys = a[key].shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            a[key].setToolTip(a[key].statusTip() + (f" ({keys})" if keys else "") if savable else
                              "Open a base model first: a project records the base, the zoo "
                              "and the plan")

    def show_message(self, text: str, timeout_ms: int = 6000) -> None:
        """A transient line in the status bar."""
        self.statusBar().showMessage(text, timeout_ms)

    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        self.statusBar().set_busy(busy, self.jobs.runner.job_name())
        self.update_actions()

    # -- menus and dialogs ------------------------------------------------------------------------
    @Slot()
    def _on_theme_changed(self, _dark: bool) -> None:
        self.actions.refresh_icons()

    def _on_theme_action(self, action) -> None:
        mode = {self.actions.theme_system: "system", self.actions.theme_light: "light",
                self.actions.theme_dark: "dark"}.get(action, "system")
        self.settings.theme = mode
        if self.theme is not None:
            self.theme.apply(mode)

    @Slot()
    def show_about(self) -> None:
        engine = self.session.engine
        device = engine.device if engine is not None else ""
        AboutDialog(self, device, self.settings.file_name).exec()

    @Slot()
    def open_log_folder(self) -> None:
        log = log_file()
        folder = log.parent if log is not None else self.settings.data_dir()
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    # -- drag and drop of files -------------------------------------------------------------------
    def _dropped_files(self, event: QDragEnterEvent | QDropEvent) -> list[str]:
        mime = event.mimeData()
        urls = mime.urls() if mime.hasUrls() else []
        return self.files.openable(u.toLocalFile() for u in urls if u.isLocalFile())

    def _accept_files(self, event: QDragEnterEvent) -> None:
        if self._dropped_files(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        self._accept_files(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 - Qt's name
        self._accept_files(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        files = self._dropped_files(event)
        if files:
            event.acceptProposedAction()
            self.files.open_paths(files)

    # -- closing ---------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self._shut_down:  # already decided and stopped (e.g. by a probe)
            event.accept()
            return
        runner = self.jobs.runner
        if runner.is_running() and not runner.is_cancelling():
            if not ask.stop_running_job(self, runner.job_name()):
                event.ignore()
                return
        if self.session.is_dirty():
            answer = ask.unsaved_changes(self, self.session.project_name())
            if answer == ask.CANCEL or (answer == ask.SAVE and not self.files.save_project()):
                event.ignore()
                return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop the worker (cancel and join), remove this session's recovery file, save layout."""
        self._shut_down = True
        self.jobs.shutdown()
        self.session.autosaver.stop()
        self.session.autosaver.mark_clean()  # the user decided about unsaved work just now
        self.save_layout()
        self.settings.sync()
        LOG.info("main window closed")

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._was_shown:
            self._was_shown = True
            self.dock_layout.window_shown()

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        # Esc cancels even when the focused widget has no use for it (the action covers the rest).
        if event.matches(QKeySequence.StandardKey.Cancel) and self.jobs.is_running():
            self.jobs.cancel()
            return
        super().keyPressEvent(event)
