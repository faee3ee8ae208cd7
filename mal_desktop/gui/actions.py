"""Every window action declared once: text, shortcut, icon, tooltip.

Menus, the toolbar, the welcome page and context menus reuse the same ``QAction`` objects, so
a shortcut or an enabled state is defined in one place. The main window connects the actions'
``triggered`` signals to its slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QActionGroup, QColor, QKeySequence, QPalette, QUndoGroup
from PySide6.QtWidgets import QApplication, QStyle, QWidget

from .icons import action_icon

SP = QStyle.StandardPixmap
KS = QKeySequence.StandardKey


@dataclass(frozen=True)
class ActionSpec:
    """Declaration of one action: shortcut is a StandardKey, a key string or None."""

    key: str
    text: str
    tip: str
    shortcut: object = None
    icon: str = ""
    fallback: SP | None = None
    checkable: bool = False


SPECS: tuple[ActionSpec, ...] = (
    ActionSpec("new_project", "&New Project", "Start an empty project", KS.New,
               "document-new", SP.SP_FileIcon),
    ActionSpec("open_base", "&Open Base Model\u2026", "Open the model that layers are merged into",
               KS.Open, "document-open", SP.SP_DialogOpenButton),
    ActionSpec("add_zoo", "Add &Zoo Models\u2026", "Add models whose layers can be merged into "
               "the base", "Ctrl+Shift+O", "list-add", SP.SP_FileDialogNewFolder),
    ActionSpec("open_project", "Open &Project\u2026", "Open a saved project (.malproj)",
               "Ctrl+Alt+O", "folder-open", SP.SP_DirOpenIcon),
    ActionSpec("open_demo", "Open &Demo Zoo", "Open an MLP base and a few zoo models trained on "
               "the digits data (built once, then cached)", None, "applications-science",
               SP.SP_ComputerIcon),
    ActionSpec("open_lm_demo", "Open &Language Demo Zoo", "Open five small Llama-style "
               "language models trained on Python's own code and docstrings, with the "
               "python-code text for curves (built once, then cached)", None,
               "accessories-text-editor", SP.SP_FileDialogContentsView),
    ActionSpec("save_project", "&Save Project", "Save the project (models, plan, settings)",
               KS.Save, "document-save", SP.SP_DialogSaveButton),
    ActionSpec("save_project_as", "Save Project &As\u2026", "Save the project under a new name",
               KS.SaveAs, "document-save-as", SP.SP_DialogSaveButton),
    ActionSpec("save_merged", "&Export Merged Model\u2026", "Assemble the plan and save the merged "
               "model with its provenance (.safetensors, or a model folder)", "Ctrl+Shift+E",
               "document-export",
               SP.SP_DriveHDIcon),
    ActionSpec("quit", "&Quit", "Quit MAL Desktop", KS.Quit, "application-exit",
               SP.SP_DialogCloseButton),
    ActionSpec("add_step", "&Add Step", "Merge the selected zoo layer into the selected base "
               "layer: a new assembly step (select a layer in a zoo tab and one in the base "
               "model first)", "Ctrl+Return", "list-add", SP.SP_ArrowRight),
    ActionSpec("run", "&Run", "Assemble the plan and sweep lambda for the selected step "
               "(naive vs aligned)", "F5", "media-playback-start", SP.SP_MediaPlay),
    ActionSpec("evaluate", "&Evaluate Models", "Evaluate the models ticked in the Evaluate "
               "panel on the ticked data sets (cached cells are reused)", "Ctrl+E",
               "system-run", SP.SP_FileDialogDetailedView),
    ActionSpec("run_study", "Run MAL &Study\u2026", "Measure the laws of Model Assembly Learning "
               "on the demo zoo and write a report with figures", None, "applications-science",
               SP.SP_FileDialogInfoView),
    ActionSpec("cancel", "&Cancel", "Cancel the running job (Esc)", "Esc", "process-stop",
               SP.SP_BrowserStop),
    ActionSpec("reset_layout", "&Reset Layout", "Put the panels back where they started", None,
               "view-restore", None),
    # Go to a panel (shows it, brings it forward and gives it the keyboard focus).
    ActionSpec("focus_base", "&Base Model", "Go to the base model's layer tree", "Alt+1"),
    ActionSpec("focus_zoo", "&Zoo Models", "Go to the layer tree of the zoo tab shown "
               "(Ctrl+Tab there switches zoo tabs)", "Alt+2"),
    ActionSpec("focus_plan", "Assembly &Plan", "Go to the list of assembly steps", "Alt+3"),
    ActionSpec("focus_curve", "Interpolation &Curve", "Go to the interpolation curve", "Alt+4"),
    ActionSpec("focus_diagnostics", "Alignment &Diagnostics", "Go to the alignment diagnostics",
               "Alt+5"),
    ActionSpec("focus_evaluate", "&Evaluate", "Go to the Evaluate panel", "Alt+6"),
    ActionSpec("theme_system", "&System", "Follow the desktop's light or dark setting",
               checkable=True),
    ActionSpec("theme_light", "&Light", "Always use the light theme", checkable=True),
    ActionSpec("theme_dark", "&Dark", "Always use the dark theme", checkable=True),
    ActionSpec("open_log", "Open &Log Folder", "Show the folder with the log file", None,
               "folder", SP.SP_DirIcon),
    ActionSpec("about", "&About MAL Desktop", "Version and system information", None,
               "help-about", SP.SP_MessageBoxInformation),
)


def _glyph_tint() -> QColor | None:
    """The colour dark glyph icons take on a dark palette; None on a light one."""
    from .theme import is_dark

    return QApplication.palette().color(QPalette.ColorRole.ButtonText) if is_dark() else None


class Actions:
    """The window's actions by key (``actions.run``, ``actions["run"]``)."""

    def __init__(self, parent: QWidget) -> None:
        self._actions: dict[str, QAction] = {}
        self._icons: list[tuple[QAction, str, QStyle.StandardPixmap | None]] = []
        for spec in SPECS:
            action = QAction(spec.text, parent)
            action.setObjectName(f"action_{spec.key}")
            shortcut_text = ""
            if isinstance(spec.shortcut, QKeySequence.StandardKey):
                action.setShortcuts(spec.shortcut)
                seq = QKeySequence(spec.shortcut)
                shortcut_text = seq.toString(QKeySequence.SequenceFormat.NativeText)
            elif isinstance(spec.shortcut, str):
                action.setShortcut(QKeySequence(spec.shortcut))
                shortcut_text = QKeySequence(spec.shortcut).toString(
                    QKeySequence.SequenceFormat.NativeText)
            tip = spec.tip if not shortcut_text or shortcut_text in spec.tip \
                else f"{spec.tip} ({shortcut_text})"
            action.setToolTip(tip)
            action.setStatusTip(spec.tip)
            if spec.icon:
                self.adopt_icon(action, spec.icon, spec.fallback)
            action.setCheckable(spec.checkable)
            self._actions[spec.key] = action
        self.focus_actions = [self._actions[s.key] for s in SPECS if s.key.startswith("focus_")]
        self.theme_group = QActionGroup(parent)
        self.theme_group.setExclusive(True)
        for key in ("theme_system", "theme_light", "theme_dark"):
            self.theme_group.addAction(self._actions[key])

    def adopt_icon(self, action: QAction, theme_name: str,
                   fallback: QStyle.StandardPixmap | None) -> None:
        """Give ``action`` its icon now and again whenever the theme changes."""
        self._icons.append((action, theme_name, fallback))
        icon = action_icon(theme_name, fallback, _glyph_tint())
        if not icon.isNull():
            action.setIcon(icon)

    def undo_actions(self, group: QUndoGroup, parent: QObject) -> tuple[QAction, QAction]:
        """Undo and Redo for ``group`` (their texts name the edit of the group's active stack),
        with the standard shortcuts and themed icons."""
        undo = group.createUndoAction(parent, "&Undo")
        undo.setShortcuts(KS.Undo)
        self.adopt_icon(undo, "edit-undo", SP.SP_ArrowBack)
        redo = group.createRedoAction(parent, "&Redo")
        redo.setShortcuts(KS.Redo)
        self.adopt_icon(redo, "edit-redo", SP.SP_ArrowForward)
        return undo, redo

    def refresh_icons(self) -> None:
        """Re-make the icons for the current palette (a dark theme lightens dark glyphs)."""
        for action, theme_name, fallback in self._icons:
            icon = action_icon(theme_name, fallback, _glyph_tint())
            if not icon.isNull():
                action.setIcon(icon)

    def __getitem__(self, key: str) -> QAction:
        return self._actions[key]

    def __getattr__(self, key: str) -> QAction:
        try:
            return self.__dict__["_actions"][key]
        except KeyError:
            raise AttributeError(key) from None

    def keys(self) -> list[str]:
        return list(self._actions)
