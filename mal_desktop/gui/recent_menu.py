"""File > Open Recent: the recent files from the settings, filled each time the menu opens."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QMenu, QWidget

from .settings import Settings


class RecentFilesMenu(QMenu):
    """The recent files (numbered shortcuts for the first nine) and "Clear Recent Files".

    Signals: ``fileChosen(str path)``; ``cleared()`` after the list was emptied.
    """

    fileChosen = Signal(str)
    cleared = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__("Open &Recent", parent)
        self.setObjectName("recentMenu")
        self._settings = settings
        self.aboutToShow.connect(self.fill)

    @Slot()
    def fill(self) -> None:
        """Rebuild the entries from the settings (the list changes while the app runs)."""
        self.clear()
        files = self._settings.recent_files
        for i, path in enumerate(files):
            action = self.addAction(f"&{i + 1} {Path(path).name}" if i < 9 else Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.setData(path)
            action.triggered.connect(self._on_action)
        if not files:
            self.addAction("No recent files").setEnabled(False)
        self.addSeparator()
        clear = self.addAction("Clear Recent Files")
        clear.setEnabled(bool(files))
        clear.triggered.connect(self._clear)

    @Slot()
    def _on_action(self) -> None:
        action = self.sender()
        if action is not None:
            self.fileChosen.emit(str(action.data()))

    @Slot()
    def _clear(self) -> None:
        self._settings.clear_recent_files()
        self.cleared.emit()
