"""Memory-mapped tensors: handing their pages back to the kernel once a pass has read them.

Model files are opened as private memory maps (safetensors' ``safe_open``): a tensor costs no
memory until it is read, and writing into it (BatchNorm repair, an in-place edit) changes only
this process's copy, never the file. But every page a pass reads (a finiteness check, the
statistics of a layer tree, a save streaming the model out) stays mapped into the process and
counts in its resident set: a pass over a 13 GiB model would leave 13 GiB "resident" although
the kernel could drop those pages at any time.

:class:`PageReleaser` unmaps them right after each tensor is processed, once a pass has read
more than ``KEEP_BYTES`` (``madvise``, Linux):
with ``MADV_DONTNEED`` when every page of the range is still the file's own (checked in
``/proc/self/pagemap``): the pages leave this process but stay in the page cache, so the next
pass over them is a cheap minor fault, not a disk read. A range this process wrote into
(copy-on-write: its pages became anonymous) would lose those writes under ``MADV_DONTNEED``;
it gets ``MADV_PAGEOUT`` instead, which only ever swaps such pages out. Only ranges inside
private file mappings are advised, so ordinary tensors (merged results, the heap) are never
touched. Elsewhere (macOS, Windows) release is a no-op: memory stays correct, only the resident
figure is higher.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from bisect import bisect_right

import numpy as np
import torch

_MADV_DONTNEED = 4  # linux/mman.h; Python's mmap module exposes them only on some builds
_MADV_PAGEOUT = 21
_PRESENT, _SWAPPED, _FILE = 1 << 63, 1 << 62, 1 << 61  # /proc/pid/pagemap entry bits
_libc: ctypes.CDLL | None = None
# Bytes a pass reads before it starts releasing (see PageReleaser): the resident set of a pass
# stays within this much of the file, however large the file.
KEEP_BYTES = 64 << 20


def _madvise():
    """libc's madvise, or None where it is not available."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _libc.madvise.restype = ctypes.c_int
        except (OSError, AttributeError):
            return None
    return _libc.madvise


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's private, writable mappings of regular files, sorted.

    Those are the model files safetensors maps (``rw-p`` with a path); shared libraries are
    mapped read-only or executable and never hold tensors, but are excluded by the tensor-range
    test anyway.
    """
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) < 6 or parts[1] != "rw-p" or not parts[5].startswith("/"):
                    continue
                start, end = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((start, end))
    except OSError:
        return []
    return sorted(ranges)


class PageReleaser:
    """Releases the pages of memory-mapped tensors after a pass over them.

    Build one per pass, then call :meth:`release` with each tensor once it has been read.
    Tensors that do not live in a file mapping are ignored. The first ``keep_bytes`` a pass
    reads stay mapped: releasing costs a read of the process's mappings (about 1 ms in a torch
    process) and a system call per tensor, which a small model's few MiB are not worth.
    """

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self._madvise = _madvise()
        self._keep_bytes = keep_bytes
        self._seen = 0
        self._ranges: list[tuple[int, int]] | None = None  # read when first needed
        self._starts: list[int] = []

    def _mapped(self, begin: int, end: int) -> bool:
        if self._ranges is None:
            self._ranges = _file_mappings()
            self._starts = [s for s, _ in self._ranges]
        i = bisect_right(self._starts, begin) - 1
        return i >= 0 and self._ranges[i][0] <= begin and end <= self._ranges[i][1]

    def release(self, tensor: torch.Tensor) -> None:
        """Advise the kernel to reclaim the whole pages ``tensor`` spans inside a file mapping."""
        if self._madvise is None or tensor.device.type != "cpu" or not tensor.numel():
            return
        if tensor.is_contiguous():  # just its bytes: a view must not release its neighbours
            begin = tensor.data_ptr()
            end = begin + tensor.numel() * tensor.element_size()
        else:
            storage = tensor.untyped_storage()
            begin, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        self._seen += end - begin
        if self._seen <= self._keep_bytes or not self._mapped(begin, end):
            return
        page = mmap.PAGESIZE
        # only pages entirely inside the storage: a neighbour sharing a page keeps it
        first = (begin + page - 1) // page * page
        last = end // page * page
        if last > first:
            advice = _MADV_DONTNEED if self._untouched(first, last) else _MADV_PAGEOUT
            self._madvise(first, last - first, advice)  # advice: failure is harmless

    def _untouched(self, first: int, last: int) -> bool:
        """True when no page in [first, last) was written by this process: every page is
        either not resident or a page of the file (not an anonymous copy-on-write page)."""
        page = mmap.PAGESIZE
        try:
            fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        except OSError:
            return False
        try:
            raw = os.pread(fd, (last - first) // page * 8, first // page * 8)
        except OSError:
            return False
        finally:
            os.close(fd)
        entries = np.frombuffer(raw, dtype=np.uint64)
        if len(entries) != (last - first) // page:
            return False
        resident = (entries & np.uint64(_PRESENT | _SWAPPED)) != 0
        anonymous = (entries & np.uint64(_FILE)) == 0
        return not bool(np.any(resident & anonymous))
