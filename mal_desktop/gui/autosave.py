"""Autosave: while there are unsaved changes, :class:`Autosaver` writes the project every few
seconds to this process's recovery file in the app data folder.

Only the timer lives here (it needs Qt); what a recovery file holds, and finding the ones a
crash left, is core logic (mal_desktop/core/project/recovery.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Slot

from ..core.project.document import Project
from ..core.project.recovery import discard_recovery, recovery_path, write_recovery

LOG = logging.getLogger("mal_desktop.project")


class Autosaver(QObject):
    """Writes unsaved work to the recovery file on a timer.

    Parameters: data_dir - app data folder; snapshot - returns (project, project path or None)
    for the current state; interval_s - seconds between checks. Call :meth:`mark_dirty` after
    every change and :meth:`mark_clean` after a save (which also removes the recovery file).
    """

    def __init__(self, data_dir: Path, snapshot: Callable[[], tuple[Project, Path | None]],
                 interval_s: int = 60, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._data_dir = data_dir
        self._snapshot = snapshot
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(max(1, int(interval_s)) * 1000)
        self._timer.timeout.connect(self.save_now)
        self._timer.start()

    @property
    def path(self) -> Path:
        """This session's recovery file."""
        return recovery_path(self._data_dir)

    def mark_dirty(self) -> None:
        """There are changes the next tick should write."""
        self._dirty = True

    def mark_clean(self) -> None:
        """The work was saved (or discarded): nothing to recover."""
        self._dirty = False
        discard_recovery(self._data_dir)

    @Slot()
    def save_now(self) -> bool:
        """Write the recovery file if there are changes since the last write; True if written."""
        if not self._dirty:
            return False
        project, project_path = self._snapshot()
        try:
            write_recovery(self._data_dir, project, project_path)
        except OSError as exc:
            LOG.warning("autosave failed: %s", exc)  # not worth a dialog every minute
            return False
        self._dirty = False
        return True

    def stop(self) -> None:
        """Stop the timer (on quit)."""
        self._timer.stop()
