"""The main window: layout (docks, menus, toolbar, status bar), title, closing, drag and drop.

What the window *does* lives in three mixins: :class:`~mal_desktop.gui.session.SessionMixin`
(jobs, start-up, run, export), :class:`~mal_desktop.gui.session_files.FilesMixin` (open,
save, recent files, demo zoo, recovery) and :class:`~mal_desktop.gui.session_eval.EvalMixin`
(the evaluation matrix, the MAL study); this module composes the widgets.

Start-up is staged so the window appears fast: the constructor builds only light widgets (the
welcome page, empty docks). :meth:`start_up` then imports the engine (torch, scipy) in the
worker thread and, once that is done, installs the real views (which import the engine too,
now at no cost) and handles the files, demo or recovery asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QByteArray, QSize, Qt, QUrl, Slot
from PySide6.QtGui import (QAction, QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent,
                           QKeySequence)
from PySide6.QtWidgets import (QComboBox, QDockWidget, QLabel, QMainWindow, QMenu, QProgressBar,
                               QSpinBox, QStackedWidget, QTabWidget, QToolBar, QToolButton,
                               QWidget)

from ..core.progress import ProgressEvent
from .actions import Actions
from .dialogs import ask
from .dialogs.about import AboutDialog
from .icons import app_icon
from .log import log_file, set_error_parent
from .autosave import Autosaver
from .session import SessionMixin
from .session_eval import EvalMixin
from .session_files import MODEL_SUFFIXES, PROJECT_SUFFIX, FilesMixin
from .settings import Settings
from .theme import ThemeController
from .welcome import WelcomePage
from .workers import JobRunner

LOG = logging.getLogger("mal_desktop.window")
APP_NAME = "MAL Desktop"


def _placeholder(text: str) -> QLabel:
    label = QLabel(text)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setWordWrap(True)
    label.setEnabled(False)
    return label


class MainWindow(SessionMixin, FilesMixin, EvalMixin, QMainWindow):
    """The application window.

    Parameters: settings - the typed settings facade (geometry, recent files, theme, ...);
    workspace - an existing Workspace (tests); by default one is made when the engine is up;
    theme - the ThemeController to switch from the View menu (None: no theme menu effect).
    """

    def __init__(self, settings: Settings, workspace: object | None = None,
                 theme: ThemeController | None = None) -> None:
        QMainWindow.__init__(self)
        self.setObjectName("mainWindow")
        self.settings = settings
        self.theme = theme
        if theme is not None:
            theme.changed.connect(self._on_theme_changed)
        self.runner = JobRunner(self)
        self.actions = Actions(self)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks
                            | QMainWindow.DockOption.AllowTabbedDocks)
        self._shut_down = False
        self._init_session(workspace)
        self._build_central()
        self._build_docks()
        self._build_toolbar()
        self._build_menus()
        self._build_status_bar()
        self._connect()
        self._default_state = self.saveState()
        self._restore_layout()
        self.autosaver = Autosaver(settings.data_dir(), self.project_snapshot,
                                   settings.autosave_interval_s, self)
        set_error_parent(self)
        self.update_title()
        self.update_actions()

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

    def _dock(self, name: str, title: str, widget: QWidget, area: Qt.DockWidgetArea,
              tip: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)  # saveState/restoreState key
        dock.setWidget(widget)
        dock.setToolTip(tip)
        dock.toggleViewAction().setStatusTip(f"Show or hide the {title.lower()} panel")
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        bottom = Qt.DockWidgetArea.BottomDockWidgetArea
        self.base_dock = self._dock("baseDock", "Base Model", _placeholder("Starting\u2026"), left,
                                    "The base model: drop zoo layers on its layers")
        self.plan_dock = self._dock("planDock", "Assembly Plan", _placeholder("Starting\u2026"),
                                    right, "The merge steps, run in order")
        self.curve_dock = self._dock("curveDock", "Interpolation Curve",
                                     _placeholder("Starting\u2026"), bottom,
                                     "Loss and accuracy over lambda, naive vs aligned")
        self.diag_dock = self._dock("diagnosticsDock", "Alignment Diagnostics",
                                    _placeholder("Starting\u2026"), bottom,
                                    "Permutation matrices, matched units and costs of a step")
        self.evaluate_dock = self._dock("evaluateDock", "Evaluate", _placeholder("Starting\u2026"),
                                        bottom, "Models x data sets: accuracy, loss, "
                                        "calibration; per-class drill-down")
        self.splitDockWidget(self.curve_dock, self.diag_dock, Qt.Orientation.Horizontal)
        self.tabifyDockWidget(self.diag_dock, self.evaluate_dock)
        self.diag_dock.raise_()
        self.resizeDocks([self.base_dock, self.plan_dock], [340, 380], Qt.Orientation.Horizontal)
        self.resizeDocks([self.curve_dock], [300], Qt.Orientation.Vertical)
        # Half each: left alone, the tabbed group (diagnostics + evaluate) takes all the width
        # the window gains and squeezes the curve to its minimum.
        self.resizeDocks([self.curve_dock, self.diag_dock], [500, 500], Qt.Orientation.Horizontal)

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
        bar.addAction(a.run)
        bar.addAction(a.cancel)
        bar.addSeparator()
        self.dataset_combo = QComboBox()
        self.dataset_combo.setObjectName("datasetCombo")
        self.dataset_combo.setToolTip("Data set for the interpolation curve (test split)")
        self.dataset_combo.setMinimumContentsLength(12)
        self.dataset_combo.addItem(self.settings.dataset, self.settings.dataset)
        self.grid_spin = QSpinBox()
        self.grid_spin.setObjectName("gridSpin")
        self.grid_spin.setRange(3, 101)
        self.grid_spin.setValue(self.settings.curve_grid)
        self.grid_spin.setSuffix(" points")
        self.grid_spin.setToolTip("Number of lambda values on the curve (0 to 1)")
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
        self.recent_menu = QMenu("Open &Recent", self)
        self.recent_menu.setObjectName("recentMenu")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file.addMenu(self.recent_menu)
        file.addAction(a.open_demo)
        file.addSeparator()
        file.addActions([a.save_project, a.save_project_as, a.save_merged])
        file.addSeparator()
        file.addAction(a.quit)
        edit = menu.addMenu("&Edit")
        edit.addActions([self.undo_action, self.redo_action])
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
        theme = view.addMenu("&Theme")
        theme.addActions([a.theme_system, a.theme_light, a.theme_dark])
        mode = self.settings.theme
        checked = {"system": a.theme_system, "light": a.theme_light, "dark": a.theme_dark}[mode]
        checked.setChecked(True)
        view.addAction(a.reset_layout)
        helpm = menu.addMenu("&Help")
        helpm.addActions([a.open_log, a.about])

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("jobProgress")
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedWidth(200)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.hide()
        self.cancel_button = QToolButton()
        self.cancel_button.setDefaultAction(self.actions.cancel)
        self.cancel_button.setAutoRaise(True)
        # Hidden widgets keep their space: a status bar that changes height while a job runs
        # re-lays out every dock, which froze the window for ~45 ms per progress update.
        for widget in (self.progress_bar, self.cancel_button):
            policy = widget.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            widget.setSizePolicy(policy)
        self.cancel_button.hide()
        self.device_label = QLabel("Device: \u2026")
        self.device_label.setObjectName("deviceLabel")
        self.device_label.setToolTip("Where alignment and evaluation compute (CUDA when "
                                     "available; MAL_DEVICE=cpu forces the CPU)")
        bar.addPermanentWidget(self.progress_bar)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.device_label)

    def _connect(self) -> None:
        a = self.actions
        for key, slot in (("new_project", self.new_project), ("open_base", self.choose_base),
                          ("add_zoo", self.choose_zoo), ("open_project", self.choose_project),
                          ("open_demo", self.open_demo), ("save_project", self.save_project),
                          ("save_project_as", self.save_project_as),
                          ("save_merged", self.choose_merged_output), ("quit", self.close),
                          ("run", self.run), ("cancel", self.cancel_job),
                          ("evaluate", self.evaluate_models), ("run_study", self.choose_study),
                          ("reset_layout", self.reset_layout), ("about", self.show_about),
                          ("open_log", self.open_log_folder)):
            a[key].triggered.connect(slot)
        a.theme_group.triggered.connect(self._on_theme_action)
        self.welcome.recentActivated.connect(self.open_recent)
        self.dataset_combo.currentIndexChanged.connect(self._on_dataset_changed)
        self.grid_spin.valueChanged.connect(self._on_grid_changed)
        self.runner.progress.connect(self._on_job_progress)
        self.runner.finished.connect(self._on_job_finished)
        self.runner.failed.connect(self._on_job_failed)
        self.runner.cancelled.connect(self._on_job_cancelled)
        self.runner.busyChanged.connect(self._on_busy_changed)

    # -- layout ---------------------------------------------------------------------------------
    def _restore_layout(self) -> None:
        geometry = self.settings.window_geometry
        if geometry.isEmpty() or not self.restoreGeometry(geometry):
            # First launch: most of the screen (four panels and two trees want room), at least
            # 1360 x 860 where the screen has it.
            area = self.screen().availableGeometry()
            self.resize(min(area.width(), max(1360, int(area.width() * 0.9))),
                        min(area.height(), max(860, int(area.height() * 0.9))))
        state = self.settings.window_state
        if not state.isEmpty():
            self.restoreState(state)

    def save_layout(self) -> None:
        """Store geometry and dock layout in the settings."""
        self.settings.window_geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()

    @Slot()
    def reset_layout(self) -> None:
        """Put docks and toolbar back in their default places."""
        self.restoreState(QByteArray(self._default_state))
        for dock in (self.base_dock, self.plan_dock, self.curve_dock, self.diag_dock,
                     self.evaluate_dock):
            dock.setFloating(False)
            dock.show()
        self.toolbar.show()

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
        name = self.project_path.name if self.project_path else "Untitled"
        self.setWindowTitle(f"{'*' if self.is_dirty() else ''}{name} \u2014 {APP_NAME}")

    def update_actions(self) -> None:
        """Enable what makes sense now."""
        a = self.actions
        busy = self.runner.is_running()
        ws = self.workspace
        has_steps = ws is not None and ws.base is not None and bool(ws.plan.steps)
        a.run.setEnabled(has_steps and not busy)
        a.run.setToolTip(a.run.statusTip() + " (F5)" if has_steps else
                         "Run needs a base model and at least one step: drag a zoo layer onto a "
                         "base layer")
        a.save_merged.setEnabled(has_steps and not busy)
        a.cancel.setEnabled(busy)
        a.evaluate.setEnabled(ws is not None and (ws.base is not None or bool(ws.zoo))
                              and not busy)
        a.run_study.setEnabled(ws is not None and not busy)
        ready = ws is not None
        for key in ("save_project", "save_project_as", "new_project"):
            a[key].setEnabled(ready)

    def show_message(self, text: str, timeout_ms: int = 6000) -> None:
        """A transient line in the status bar."""
        self.statusBar().showMessage(text, timeout_ms)

    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if busy:
            self.progress_bar.setRange(0, 0)  # busy indicator until a fraction arrives
            self.statusBar().showMessage(f"{self.runner.job_name()}\u2026")
        else:
            self.statusBar().clearMessage()
        self.update_actions()

    def show_progress(self, event: ProgressEvent) -> None:
        """Progress bar and message of the running job."""
        if event.fraction == event.fraction:  # not NaN
            value = int(round(1000 * max(0.0, min(1.0, event.fraction))))
            if self.progress_bar.maximum() != 1000:
                self.progress_bar.setRange(0, 1000)
            if value != self.progress_bar.value():
                self.progress_bar.setValue(value)
        if event.message:
            # The status bar's message area: drawn in place, no layout (unlike a QLabel).
            self.statusBar().showMessage(event.message)

    # -- menus and dialogs ------------------------------------------------------------------------
    @Slot()
    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files
        for i, path in enumerate(files):
            action = self.recent_menu.addAction(f"&{i + 1} {Path(path).name}" if i < 9
                                                else Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.setData(path)
            action.triggered.connect(self._on_recent_action)
        if not files:
            self.recent_menu.addAction("No recent files").setEnabled(False)
        self.recent_menu.addSeparator()
        clear = self.recent_menu.addAction("Clear Recent Files")
        clear.setEnabled(bool(files))
        clear.triggered.connect(self._clear_recent)

    @Slot()
    def _on_recent_action(self) -> None:
        action = self.sender()
        if action is not None:
            self.open_recent(str(action.data()))

    @Slot()
    def _clear_recent(self) -> None:
        self.settings.clear_recent_files()
        self.welcome.set_recent([])

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
        device = self.engine.device if self.engine is not None else ""
        AboutDialog(self, device, self.settings.file_name).exec()

    @Slot()
    def open_log_folder(self) -> None:
        log = log_file()
        folder = log.parent if log is not None else self.settings.data_dir()
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    # -- drag and drop of files -------------------------------------------------------------------
    @staticmethod
    def _dropped_files(event: QDragEnterEvent | QDropEvent) -> list[str]:
        mime = event.mimeData()
        if not mime.hasUrls():
            return []
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        return [f for f in files if Path(f).suffix.lower() in (*MODEL_SUFFIXES, PROJECT_SUFFIX)]

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        if self._dropped_files(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._dropped_files(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        files = self._dropped_files(event)
        if files:
            event.acceptProposedAction()
            self.open_paths(files)

    # -- closing ---------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self._shut_down:  # already decided and stopped (e.g. by a probe)
            event.accept()
            return
        if self.runner.is_running() and not self.runner.is_cancelling():
            if not ask.stop_running_job(self, self.runner.job_name()):
                event.ignore()
                return
        if self.is_dirty():
            answer = ask.unsaved_changes(self, self.project_name())
            if answer == ask.CANCEL or (answer == ask.SAVE and not self.save_project()):
                event.ignore()
                return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop the worker (cancel and join), remove this session's recovery file, save layout."""
        self._shut_down = True
        self.queue_clear()
        self.runner.shutdown()
        self.autosaver.stop()
        self.autosaver.mark_clean()  # the user decided about unsaved work just now
        self.save_layout()
        self.settings.sync()
        LOG.info("main window closed")

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        # Esc cancels even when the focused widget has no use for it (the action covers the rest).
        if event.matches(QKeySequence.StandardKey.Cancel) and self.runner.is_running():
            self.cancel_job()
            return
        super().keyPressEvent(event)
