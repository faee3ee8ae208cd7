"""Project files (.malproj): versioned JSON naming the model files, the plan and UI state.

A project never embeds weights (house style: JSON plus safetensors, never pickle). Model paths
are stored relative to the project's folder when the files live inside it (so a project folder
can be moved or shared) and absolute otherwise. Saving is atomic.

Autosave: while there are unsaved changes, :class:`Autosaver` writes the project every few
seconds to a recovery file in the app data folder, tagged with the writing process id. After a
crash, :func:`find_recoveries` returns the recovery files whose process is gone and that are
newer than the project they belong to, and the app offers to restore them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Slot

from .. import __version__
from ..core.errors import MalError, PlanError
from ..core.io.atomic import atomic_write_text
from ..core.merge.plan import AssemblyPlan, AssemblyStep

LOG = logging.getLogger("mal_desktop.project")

PROJECT_FORMAT = "mal-desktop-project"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".malproj"
RECOVERY_PREFIX = "autosave-"


class ProjectError(MalError):
    """A project file cannot be read or written (names the file and the problem)."""


@dataclass
class Project:
    """What a project file holds.

    plan: base path, zoo models by name, steps (absolute paths in memory); data: the dataset
    for curves (registry name or .npz path); ui: free-form UI state (selected step, grid, ...).
    """

    plan: AssemblyPlan = field(default_factory=AssemblyPlan)
    data: str = "digits"
    ui: dict[str, Any] = field(default_factory=dict)


def _stored_path(p: str, folder: Path | None) -> str:
    """Relative to ``folder`` when ``p`` lies inside it, else absolute."""
    if not p:
        return p
    path = Path(p).expanduser().resolve()
    if folder is not None:
        try:
            return path.relative_to(folder.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def _resolved_path(p: str, folder: Path) -> str:
    if not p:
        return p
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else (folder / path).resolve())


def _is_file_spec(data: str) -> bool:
    return data.endswith(".npz") or "/" in data or os.sep in data


def project_to_json(project: Project, folder: Path | None) -> dict[str, Any]:
    """The JSON document for ``project``; paths relative to ``folder`` where possible."""
    plan = project.plan
    data = _stored_path(project.data, folder) if _is_file_spec(project.data) else project.data
    return {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "app_version": __version__,
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": _stored_path(plan.base, folder),
        "zoo": {name: _stored_path(p, folder) for name, p in plan.zoo.items()},
        "steps": [s.to_json() for s in plan.steps],
        "data": data,
        "ui": dict(project.ui),
    }


def project_from_json(doc: Any, folder: Path, where: str) -> Project:
    """Parse a project document; relative paths are resolved against ``folder``.

    Raises ProjectError for a foreign, newer or malformed document.
    """
    if not isinstance(doc, dict) or doc.get("format") != PROJECT_FORMAT:
        raise ProjectError(f"{where}: not a MAL Desktop project file")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise ProjectError(f"{where}: the project has no valid version number")
    if version > PROJECT_VERSION:
        raise ProjectError(f"{where}: the project was saved by a newer MAL Desktop (project "
                           f"version {version}, this one reads up to {PROJECT_VERSION}); "
                           "please update MAL Desktop")
    base = doc.get("base", "")
    zoo = doc.get("zoo", {})
    steps = doc.get("steps", [])
    data = doc.get("data", "digits")
    ui = doc.get("ui", {})
    if not isinstance(base, str):
        raise ProjectError(f"{where}: 'base' must be a file path")
    if not isinstance(zoo, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in zoo.items()):
        raise ProjectError(f"{where}: 'zoo' must map model names to file paths")
    if not isinstance(steps, list):
        raise ProjectError(f"{where}: 'steps' must be a list")
    if not isinstance(data, str) or not data:
        raise ProjectError(f"{where}: 'data' must name a dataset")
    if not isinstance(ui, dict):
        raise ProjectError(f"{where}: 'ui' must be an object")
    try:
        parsed = [AssemblyStep.from_json(s) if isinstance(s, dict) else _bad_step(s) for s in steps]
    except PlanError as exc:
        raise ProjectError(f"{where}: {exc}") from None
    for i, step in enumerate(parsed):
        if step.source not in zoo:
            raise ProjectError(f"{where}: step {i + 1} uses zoo model {step.source!r}, which the "
                               f"project does not list ({', '.join(zoo) or 'no zoo models'})")
    plan = AssemblyPlan(base=_resolved_path(base, folder),
                        zoo={k: _resolved_path(v, folder) for k, v in zoo.items()},
                        data=None, steps=parsed)
    if _is_file_spec(data):
        data = _resolved_path(data, folder)
    plan.data = data
    return Project(plan=plan, data=data, ui=dict(ui))


def _bad_step(raw: Any) -> AssemblyStep:
    raise PlanError(f"a plan step must be an object, got {raw!r}")


def save_project(project: Project, path: str | Path) -> Path:
    """Write ``project`` to ``path`` atomically (suffix .malproj added when missing).

    Returns the written path. Raises ProjectError when the file cannot be written.
    """
    path = Path(path).expanduser()
    if path.suffix != PROJECT_SUFFIX:
        path = path.with_name(path.name + PROJECT_SUFFIX)
    text = json.dumps(project_to_json(project, path.parent), indent=2) + "\n"
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise ProjectError(f"{path}: cannot save the project ({exc.strerror or exc})") from None


def read_project_json(path: str | Path) -> Any:
    """The parsed JSON of a project (or recovery) file. Raises ProjectError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(f"{path}: the project file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read the project ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProjectError(f"{path}: not a valid project file (JSON error on line {exc.lineno}: "
                           f"{exc.msg})") from None


def load_project(path: str | Path) -> Project:
    """Read a .malproj file. Raises ProjectError (missing, corrupt, foreign or newer file)."""
    path = Path(path).expanduser()
    return project_from_json(read_project_json(path), path.parent.resolve(), str(path))


# -- autosave and recovery ----------------------------------------------------------------------
@dataclass(frozen=True)
class Recovery:
    """An autosaved recovery file left by a session that did not end normally."""

    path: Path
    project_path: Path | None  # the project it belongs to; None for an untitled project
    saved_at: float  # modification time (seconds since the epoch)

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
    """Autosave ``project`` to this process's recovery file (absolute paths); returns it."""
    folder = recovery_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    doc = project_to_json(project, None)
    doc["recovery"] = {"project_path": str(project_path) if project_path else None,
                       "pid": os.getpid()}
    return atomic_write_text(recovery_path(data_dir), json.dumps(doc, indent=2) + "\n")


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
        self._timer.stop()
