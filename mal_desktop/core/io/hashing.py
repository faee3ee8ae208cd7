"""Content hashes of model files: provenance, and proof that a referenced program is unchanged."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..user_dirs import user_cache_dir
from .atomic import atomic_write_text

_CHUNK = 1 << 20  # 1 MiB: large enough to be fast, small enough to stream multi-GB files


def file_sha256(path: str | Path, chunk_size: int = _CHUNK) -> str:
    """SHA-256 of a file's bytes, read in chunks so large files never sit in memory whole.

    Parameters:
        path: the file to hash (opened read-only).
        chunk_size: bytes read per step.
    Returns:
        The lowercase hex digest.
    Raises:
        OSError: the file cannot be opened or read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """SHA-256 of bytes already in memory (a file read once for checking and loading)."""
    return hashlib.sha256(data).hexdigest()


def _stat_key(path: Path) -> list:
    """What identifies one version of a file without reading it: any write changes the size,
    the modification time or the change time (ctime cannot be set back by the writer)."""
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


_memo: dict[str, str] = {}


def cached_file_sha256(path: str | Path) -> str:
    """``file_sha256``, remembered per file version (path, size, mtime, ctime, inode) in memory
    and in the user cache, so provenance of a multi-GB input is hashed once, not at every load.

    The hash is needed only when a merge is saved (provenance); loading never computes it.
    A cache that cannot be read or written is ignored (the hash is then computed).

    Raises:
        OSError: the file cannot be read.
    """
    p = Path(path).resolve()
    key = json.dumps(_stat_key(p))
    if key in _memo:
        return _memo[key]
    entry = _cache_dir() / (hashlib.sha1(key.encode()).hexdigest()[:32] + ".json")
    try:
        stored = json.loads(entry.read_text(encoding="utf-8"))
        if stored.get("key") == key and isinstance(stored.get("sha256"), str):
            _memo[key] = stored["sha256"]
            return _memo[key]
    except (OSError, ValueError, AttributeError):
        pass  # no entry yet, or a damaged one: recompute
    digest = file_sha256(p)
    if json.dumps(_stat_key(p)) == key:  # unchanged while we read it
        _memo[key] = digest
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(entry, json.dumps({"key": key, "sha256": digest}), durable=False)
        except OSError:
            pass
    return digest


def folder_files_sha256(folder: str | Path, names: Iterable[str]) -> str:
    """Content hash of a model folder: the files ``names`` (inside ``folder``; those that are
    missing are left out) by name and ``cached_file_sha256``, so renaming the folder keeps it
    and editing one file changes it; each file is hashed once per version.

    Raises:
        OSError: a file cannot be read.
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        if (root / name).is_file():
            digest.update(f"{name}\0{cached_file_sha256(root / name)}\n".encode())
    return digest.hexdigest()


def _cache_dir() -> Path:
    return user_cache_dir("hashes", "MAL_HASH_CACHE")
