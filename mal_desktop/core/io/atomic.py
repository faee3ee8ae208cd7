"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one.

The new content goes to a temporary file in the target's directory (same filesystem, so the final
``os.replace`` is an atomic rename), is flushed to disk with ``fsync``, then replaces the target.
Any exception - including ``Cancelled`` and ``KeyboardInterrupt`` - removes the temporary file and
leaves the target as it was. Used for model files, project files and reports.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def _temp_path(target: Path) -> Path:
    """Create (exclusively) an empty hidden temp file next to ``target``; returns its path.

    The temp name keeps the target's suffix because some writers infer the format from it.
    ``os.open`` with mode 0o666 lets the process umask decide the permissions, so the final file
    gets the same permissions an ordinary ``open(path, "w")`` would give it (mkstemp would give
    0o600).
    """
    for _ in range(100):
        candidate = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"cannot create a temporary file next to {target}")


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


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Write a file atomically.

    Parameters:
        path: the target file; its directory must exist.
        writer: called with the path of an (empty) temporary file in the same directory; it writes
            the complete content there. It may replace the temporary file but must not rename it.
    Returns:
        ``path`` as a ``Path``.
    Raises:
        Whatever ``writer`` raises (after removing the temporary file; the target is untouched),
        or ``OSError`` when the temporary file cannot be created, synced or moved into place.
    """
    target = Path(path)
    tmp = _temp_path(target)
    try:
        writer(tmp)
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        # BaseException on purpose: a cancelled job or Ctrl-C must not leave a stray temp file.
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path.

    Raises:
        OSError: the file cannot be written (the target is then untouched).
    """

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    Raises:
        OSError: the file cannot be written (the target is then untouched).
    """

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)
