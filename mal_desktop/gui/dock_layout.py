"""The window's docks: made once, sized in proportion to the window, saved, restored, reset,
and reachable from the keyboard.

Default sizes are shares of the window, applied when the window has its size (first launch and
Reset Layout): a state saved while the window was still small (before it was shown) used to be
what Reset Layout went back to, which squeezed the plan editor's lambda slider to ~40 px. The
window's first size fits the screen's available area (1280 x 720 included), so the status bar
stays on screen; what does not fit scrolls inside the panels (plots, the step editor).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QWidget

from .settings import Settings

DOCKS = ("base", "plan", "curve", "diagnostics", "evaluate")
RIGHT_SHARE = 0.27  # the plan's share of the window's width; the two layer trees (base on the
# left, the zoo in the middle) split the rest evenly: they are read side by side, row against row
# ... but the plan at least this many text lines wide (font height as the unit, so it follows the
# font and the scaling): room for every column of a typical step (the table's two-line rows;
# tests/gui/test_layout.py checks it at 1280 x 720 and 1600 x 1000), at most MAX_RIGHT_SHARE.
PLAN_MIN_LINES, MAX_RIGHT_SHARE = 33, 0.4
BOTTOM_SHARE = 0.55  # the plots' share of the height: curves need room, the trees show rows
FIRST_SIZE = (1440, 900)  # the first window on a large screen; smaller screens: their area


def _placeholder(text: str) -> QLabel:
    label = QLabel(text)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setWordWrap(True)
    label.setEnabled(False)
    return label


class DockLayout(QObject):
    """The docks of ``window`` by name (``layout.docks["curve"]``) and their layout.

    Parameters: window - the main window; settings - where geometry and dock state are kept.
    """

    def __init__(self, window: QMainWindow, settings: Settings) -> None:
        super().__init__(window)
        self._window = window
        self._settings = settings
        self.docks: dict[str, QDockWidget] = {}
        self._default_sizes_due = True
        self._build()
        # dock sizes followed for _regrow: the last ones the user saw, and those a shrinking
        # window squeezed (as they were before)
        self._sizes: dict[str, QSize] = {}
        self._squeezed: dict[str, QSize] = {}
        self._window_size = QSize()
        self._sharing = False  # True while _share_the_loss resizes docks
        self._names = {id(dock): name for name, dock in self.docks.items()}
        window.installEventFilter(self)
        for dock in self.docks.values():
            dock.installEventFilter(self)

    def _dock(self, name: str, title: str, area: Qt.DockWidgetArea, tip: str) -> QDockWidget:
        dock = QDockWidget(title, self._window)
        dock.setObjectName(f"{name}Dock")  # saveState/restoreState key
        dock.setWidget(_placeholder("Starting\u2026"))
        dock.setToolTip(tip)
        dock.toggleViewAction().setStatusTip(f"Show or hide the {title.lower()} panel")
        self._window.addDockWidget(area, dock)
        return dock

    def _build(self) -> None:
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        bottom = Qt.DockWidgetArea.BottomDockWidgetArea
        d = self.docks
        d["base"] = self._dock("base", "Base Model", left,
                               "The base model: drop zoo layers on its layers")
        d["plan"] = self._dock("plan", "Assembly Plan", right, "The merge steps, run in order")
        d["curve"] = self._dock("curve", "Interpolation Curve", bottom,
                                "Loss and accuracy over lambda, naive vs aligned")
        d["diagnostics"] = self._dock("diagnostics", "Alignment Diagnostics", bottom,
                                      "Permutation matrices, matched units and costs of a step")
        d["evaluate"] = self._dock("evaluate", "Evaluate", bottom, "Models x data sets: "
                                   "accuracy, loss, calibration; per-class drill-down")
        self._arrange()

    def _arrange(self) -> None:
        """Docks in their default places (not their sizes: see :meth:`apply_default_sizes`)."""
        w, d = self._window, self.docks
        for dock in d.values():
            dock.setFloating(False)
            dock.show()
        w.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, d["base"])
        w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, d["plan"])
        for name in ("curve", "diagnostics", "evaluate"):
            w.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, d[name])
        w.splitDockWidget(d["curve"], d["diagnostics"], Qt.Orientation.Horizontal)
        w.tabifyDockWidget(d["diagnostics"], d["evaluate"])
        d["diagnostics"].raise_()

    def _default_sizes(self) -> list[tuple[list[str], list[int], Qt.Orientation]]:
        """(docks, sizes, orientation) of the default layout for the window as it is now: the
        side docks' widths, the bottom area's height, the curve beside its tabbed neighbours."""
        w = self._window
        width, height = max(w.width(), 640), max(w.height(), 480)
        plan = min(int(width * MAX_RIGHT_SHARE),
                   max(int(width * RIGHT_SHARE), PLAN_MIN_LINES * w.fontMetrics().height()))
        horizontal, vertical = Qt.Orientation.Horizontal, Qt.Orientation.Vertical
        # Half each for the curve and the tabbed group (diagnostics + evaluate): left alone, the
        # group takes all the width the window gains and squeezes the curve to its minimum.
        return [(["base", "plan"], [(width - plan) // 2, plan], horizontal),
                (["curve"], [int(height * BOTTOM_SHARE)], vertical),
                (["curve", "diagnostics"], [width // 2, width // 2], horizontal)]

    def apply_default_sizes(self) -> None:
        """Size the docks as shares of the window as it is now."""
        for names, sizes, orientation in self._default_sizes():
            self._window.resizeDocks([self.docks[n] for n in names], sizes, orientation)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """Follow the docks' sizes, and put back those a shrinking window squeezed when it
        grows again (see :meth:`_regrow`)."""
        if event.type() != QEvent.Type.Resize:
            return False
        if watched is self._window:
            old, new = event.oldSize(), event.size()
            if old.isValid() and (new.width() < old.width() or new.height() < old.height()):
                for name, size in self._sizes.items():  # as they were before this shrink
                    self._squeezed.setdefault(name, size)
                if new.width() < old.width():
                    QTimer.singleShot(0, self, self._share_the_loss)
            if old.isValid() and (new.width() > old.width() or new.height() > old.height()):
                QTimer.singleShot(0, self, self._regrow)
            self._window_size = new
        elif self._window.size() == self._window_size and not self._sharing:
            # the window kept its size: the user moved a dock's splitter; that is its size now
            name = self._names.get(id(watched))
            if name is not None:
                self._sizes[name] = event.size()
                self._squeezed.pop(name, None)
        return False

    def _regrow(self) -> None:
        """After the window grew: docks a smaller window had squeezed get their size back.

        Qt gives all of a window's growth to the central widget, so docks squeezed while the
        window was small (the plan editor's slider and combo boxes cut off) stayed squeezed
        after it was made large again. Only what a shrink took is given back: a size the user
        chose (a splitter moved, a restored layout) stays."""
        bottom = {"curve", "diagnostics", "evaluate"}
        for name, before in list(self._squeezed.items()):
            dock = self.docks[name]
            if not dock.isVisible() or dock.isFloating():
                continue
            if dock.width() < before.width():
                self._window.resizeDocks([dock], [before.width()], Qt.Orientation.Horizontal)
            if name in bottom and dock.height() < before.height():
                self._window.resizeDocks([dock], [before.height()], Qt.Orientation.Vertical)
        QTimer.singleShot(0, self, self._settle)

    def _share_the_loss(self) -> None:
        """After the window got narrower: when the plan or the zoo in the middle is below its
        share of the new width while the base tree keeps more than its own, base and plan get
        their shares (Qt took the loss from the plan and the zoo: at 1024 px the plan was 220 px
        wide, its step names '...' and its editor cut off, while the base tree kept its
        340 px). What was taken comes back when the window grows again (:meth:`_regrow`)."""
        base, plan = self.docks["base"], self.docks["plan"]
        if any(not d.isVisible() or d.isFloating() for d in (base, plan)):
            return
        (_, (base_share, plan_share), horizontal), *_ = self._default_sizes()
        middle = self._window.centralWidget()
        middle_share = self._window.width() - base_share - plan_share
        if base.width() > base_share and (plan.width() < plan_share
                                          or middle is not None
                                          and middle.width() < middle_share):
            # laid out now, not later: the docks' resize events must not read as the user's
            # splitter (which would forget what the shrink took)
            self._sharing = True
            try:
                self._window.resizeDocks([base, plan], [base_share, plan_share], horizontal)
                self._window.layout().activate()
            finally:
                self._sharing = False

    def _settle(self) -> None:
        """After a regrow: docks back at their size are no longer squeezed."""
        for name, before in list(self._squeezed.items()):
            dock = self.docks[name]
            if dock.width() >= before.width() and dock.height() >= before.height():
                del self._squeezed[name]
        self._note_sizes()

    def _note_sizes(self) -> None:
        """The docks' sizes as they are now (the layout the user sees)."""
        self._sizes = {name: dock.size() for name, dock in self.docks.items()}
        self._window_size = self._window.size()

    # -- geometry and state ---------------------------------------------------------------------
    def restore(self) -> None:
        """The saved geometry and dock state, or a first window that fits the screen."""
        w = self._window
        geometry = self._settings.window_geometry
        if geometry.isEmpty() or not w.restoreGeometry(geometry):
            area = w.screen().availableGeometry()
            frame = 40  # title bar and borders the window manager adds around the window
            w.resize(min(area.width() - 16, max(FIRST_SIZE[0], int(area.width() * 0.85))),
                     min(area.height() - frame, max(FIRST_SIZE[1], int(area.height() * 0.85))))
            w.move(area.left() + (area.width() - w.width()) // 2,
                   area.top() + max(0, (area.height() - w.height() - frame) // 2))
        state = self._settings.window_state
        self._default_sizes_due = state.isEmpty() or not w.restoreState(state)
        if self._default_sizes_due:
            self.apply_default_sizes()

    def window_shown(self) -> None:
        """Call when the window is first shown: default dock sizes again for the size it has
        now (before, the layout had no room to share out), and floating docks restored with
        the state (shown before the window, so behind it) brought forward."""
        if self._default_sizes_due:
            QTimer.singleShot(0, self, self.apply_default_sizes)
        QTimer.singleShot(0, self, self._note_sizes)  # after the sizes above: what _regrow keeps
        QTimer.singleShot(0, self, self.raise_floating)

    def save(self) -> None:
        """Store geometry and dock state in the settings."""
        self._settings.window_geometry = self._window.saveGeometry()
        self._settings.window_state = self._window.saveState()

    def reset(self) -> None:
        """Docks back in their default places, sized for the window as it is now."""
        self._arrange()
        self.apply_default_sizes()

    def raise_floating(self) -> None:
        """Bring floating docks in front of the main window."""
        for dock in self.docks.values():
            if dock.isFloating() and dock.isVisible():
                dock.raise_()
                dock.activateWindow()

    # -- keyboard ---------------------------------------------------------------------------------
    def focus(self, name: str, widget: QWidget | None) -> None:
        """Show dock ``name`` (none for "zoo", the central area), bring it forward and give
        ``widget`` (inside it) the focus."""
        dock = self.docks.get(name)
        if dock is not None:
            dock.show()
            dock.raise_()
        if widget is not None:
            widget.setFocus(Qt.FocusReason.ShortcutFocusReason)
