"""Content hashes of model files: provenance, and proof that a referenced program is unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
