"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one.

The new content goes to a temporary file in the target's directory (same filesystem, so the final
``os.replace`` is an atomic rename), is flushed to disk with ``fsync``, then replaces the target.
Any exception - including ``Cancelled`` and ``KeyboardInterrupt`` - removes the temporary file and
leaves the target as it was. Used for model files, project files and reports.
"""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path
from typing import Callable


def _temp_name(target: Path, pid: int, token: str) -> str:
    return f".{target.stem}.{pid}-{token}.tmp{target.suffix}"


def _temp_path(target: Path) -> Path:
    """Create (exclusively) an empty hidden temp file next to ``target``; returns its path.

    The temp name keeps the target's suffix because some writers infer the format from it, and
    carries the writer's process id so that a later write can tell a stray file left by a killed
    process from one another process is writing right now (see :func:`remove_stale_temp_files`).
    ``os.open`` with mode 0o666 lets the process umask decide the permissions, so the final file
    gets the same permissions an ordinary ``open(path, "w")`` would give it (mkstemp would give
    0o600).
    """
    for _ in range(100):
        candidate = target.with_name(_temp_name(target, os.getpid(), secrets.token_hex(4)))
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"cannot create a temporary file next to {target}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(target: Path) -> list[Path]:
    """Remove the temporary files of ``target`` left by writers that no longer run (a kill -9
    or a power cut between creating the temp file and renaming it). Returns what was removed.

    Temp files of live processes (this one included) are left alone: they may be mid-write.
    """
    removed = []
    pattern = f".{glob.escape(target.stem)}.*-*.tmp{glob.escape(target.suffix)}"
    for candidate in target.parent.glob(pattern):
        pid_text = candidate.name[len(target.stem) + 2:].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass  # gone already, or not ours to remove: never a reason to fail the write
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); Windows cannot open directories, and some filesystems
    refuse fsync on them - the data is already safe, so those cases are skipped."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, writer: Callable[[Path], None], durable: bool = True) -> Path:
    """Write a file atomically.

    Parameters:
        path: the target file; its directory must exist.
        writer: called with the path of an (empty) temporary file in the same directory; it writes
            the complete content there. It may replace the temporary file but must not rename it.
        durable: fsync the file and its folder, so the new content survives a power cut; False
            keeps only the atomic rename (enough when the writing process is killed), for
            frequent small writes that must not stall their thread (autosave).
    Returns:
        ``path`` as a ``Path``.
    Raises:
        Whatever ``writer`` raises (after removing the temporary file; the target is untouched);
        an ``OSError`` (disk full, permission denied, ...) is raised naming ``path`` itself.
    """
    target = Path(path)
    remove_stale_temp_files(target)
    tmp = _temp_path(target)
    try:
        writer(tmp)
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        # BaseException on purpose: a cancelled job or Ctrl-C must not leave a stray temp file.
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            # name the file the user asked for, not our temporary one (disk full, permissions)
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None
        raise
    if durable:
        _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8",
                      durable: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path.

    Raises:
        OSError: the file cannot be written (the target is then untouched).
    """

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)

    return atomic_write(path, write, durable)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    Raises:
        OSError: the file cannot be written (the target is then untouched).
    """

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)
