"""Autosave: shortly after every change, :class:`Autosaver` writes the project to this process's
recovery file in the app data folder, so a crash (or a kill -9) loses at most the last seconds.

Only the timers live here (they need Qt); what a recovery file holds, and finding the ones a
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

#: Seconds of quiet after the last change before the recovery file is written (debounce).
QUIET_S = 2.0
#: Longest wait for a write while changes keep coming (a slider being dragged for a minute).
MAX_WAIT_S = 10.0


class Autosaver(QObject):
    """Writes unsaved work to the recovery file, debounced.

    Parameters: data_dir - app data folder; snapshot - returns (project, project path or None)
    for the current state; quiet_s - seconds after the last change before writing; max_wait_s -
    the longest a change waits while edits keep coming. Call :meth:`mark_dirty` after every
    change and :meth:`mark_clean` after a save (which also removes the recovery file).

    A write is a small JSON file written atomically without fsync (a crash of the process keeps
    the page cache; the fsync a power cut would need can stall the GUI thread on a busy disk).
    """

    def __init__(self, data_dir: Path, snapshot: Callable[[], tuple[Project, Path | None]],
                 quiet_s: float = QUIET_S, max_wait_s: float = MAX_WAIT_S,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._data_dir = data_dir
        self._snapshot = snapshot
        self._dirty = False
        self._quiet = QTimer(self)
        self._quiet.setSingleShot(True)
        self._quiet.setInterval(max(1, int(quiet_s * 1000)))
        self._quiet.timeout.connect(self.save_now)
        self._deadline = QTimer(self)  # started by the first change since the last write
        self._deadline.setSingleShot(True)
        self._deadline.setInterval(max(1, int(max_wait_s * 1000)))
        self._deadline.timeout.connect(self.save_now)

    @property
    def path(self) -> Path:
        """This session's recovery file."""
        return recovery_path(self._data_dir)

    def mark_dirty(self) -> None:
        """A change to write soon: after ``quiet_s`` without further changes, at the latest
        ``max_wait_s`` after the first unsaved one."""
        self._dirty = True
        self._quiet.start()  # restarts: the write waits for a pause in the edits
        if not self._deadline.isActive():
            self._deadline.start()

    def mark_clean(self) -> None:
        """The work was saved (or discarded): nothing to recover."""
        self._dirty = False
        self._quiet.stop()
        self._deadline.stop()
        discard_recovery(self._data_dir)

    @Slot()
    def save_now(self) -> bool:
        """Write the recovery file if there are changes since the last write; True if written."""
        self._quiet.stop()
        self._deadline.stop()
        if not self._dirty:
            return False
        project, project_path = self._snapshot()
        try:
            write_recovery(self._data_dir, project, project_path)
        except OSError as exc:
            LOG.warning("autosave failed: %s", exc)  # not worth a dialog for each edit
            return False
        self._dirty = False
        return True

    def stop(self) -> None:
        """Stop the timers (on quit)."""
        self._quiet.stop()
        self._deadline.stop()
