"""Crash recovery: autosaved copies of unsaved projects, and finding the ones a crash left.

While there are unsaved changes the GUI writes the project every few seconds to a recovery file
in the app data folder, tagged with the writing process id (:func:`write_recovery`; the timer
lives in the GUI). After a crash, :func:`find_recoveries` returns the recovery files whose
process is gone and that are newer than the project they belong to.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..io.atomic import atomic_write_text
from .document import (PROJECT_SUFFIX, Project, ProjectError, project_from_json, project_to_json,
                       read_project_json)

LOG = logging.getLogger("mal_desktop.project")

RECOVERY_PREFIX = "autosave-"


@dataclass(frozen=True)
class Recovery:
    """An autosaved recovery file left by a session that did not end normally."""

    path: Path
    project_path: Path | None  # the project it belongs to; None for an untitled project
    saved_at: float  # modification time (seconds since the epoch)

    @property
    def pid(self) -> int:
        """The id of the process that wrote the file (encoded in its name)."""
        return int(self.path.name[len(RECOVERY_PREFIX):-len(PROJECT_SUFFIX)])

    def describe(self) -> str:
        """One line for the user: which project and when."""
        when = _dt.datetime.fromtimestamp(self.saved_at).strftime("%Y-%m-%d %H:%M")
        name = self.project_path.name if self.project_path else "an untitled project"
        return f"{name}, autosaved {when}"


def recovery_dir(data_dir: Path) -> Path:
    """Folder holding recovery files."""
    return data_dir / "recovery"


def recovery_path(data_dir: Path, pid: int | None = None) -> Path:
    """The recovery file of process ``pid`` (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return recovery_dir(data_dir) / f"{RECOVERY_PREFIX}{pid}{PROJECT_SUFFIX}"


def write_recovery(data_dir: Path, project: Project, project_path: Path | None) -> Path:
    """Autosave ``project`` to this process's recovery file (absolute paths); returns it.

    Raises OSError when the file cannot be written.
    """
    folder = recovery_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    doc = project_to_json(project, None)
    doc["recovery"] = {"project_path": str(project_path) if project_path else None,
                       "pid": os.getpid()}
    # no fsync: written seconds after every edit, it must never stall the GUI thread; the
    # atomic rename alone keeps it whole when the app is killed
    return atomic_write_text(recovery_path(data_dir), json.dumps(doc, indent=2) + "\n",
                             durable=False)


def discard_recovery(data_dir: Path, pid: int | None = None) -> None:
    """Remove the recovery file of ``pid`` (this process by default), if any."""
    try:
        recovery_path(data_dir, pid).unlink()
    except FileNotFoundError:
        pass


def _process_alive(pid: int, mtime: float) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        # os.kill(pid, 0) would terminate the process on Windows; a file written in the last
        # minutes is taken to belong to a running instance instead.
        return time.time() - mtime < 300
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_recoveries(data_dir: Path) -> list[Recovery]:
    """Recovery files of sessions that ended abnormally and that are worth offering, newest first.

    A file is offered when its process is gone and it is newer than the project file it belongs
    to (or that project was never saved or no longer exists). Files older than their project
    were superseded by a later save and are removed. Unreadable files are skipped (logged).
    """
    folder = recovery_dir(data_dir)
    if not folder.is_dir():
        return []
    found: list[Recovery] = []
    for path in folder.glob(f"{RECOVERY_PREFIX}*{PROJECT_SUFFIX}"):
        try:
            pid = int(path.name[len(RECOVERY_PREFIX):-len(PROJECT_SUFFIX)])
            mtime = path.stat().st_mtime
        except (ValueError, OSError):
            continue
        if _process_alive(pid, mtime):
            continue
        try:
            meta = read_project_json(path).get("recovery", {})
        except (ProjectError, AttributeError) as exc:
            LOG.warning("skipping unreadable recovery file %s: %s", path, exc)
            continue
        project_path = Path(meta["project_path"]) if meta.get("project_path") else None
        if project_path is not None and project_path.exists() \
                and project_path.stat().st_mtime >= mtime:
            LOG.info("removing recovery file %s: %s was saved after it", path, project_path)
            path.unlink(missing_ok=True)
            continue
        found.append(Recovery(path, project_path, mtime))
    return sorted(found, key=lambda r: r.saved_at, reverse=True)


def load_recovery(recovery: Recovery) -> Project:
    """The project saved in a recovery file. Raises ProjectError."""
    return project_from_json(read_project_json(recovery.path), recovery.path.parent,
                             str(recovery.path))
