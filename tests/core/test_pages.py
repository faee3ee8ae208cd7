"""A pass over a memory-mapped model keeps its resident set bounded (io/pages.py).

Resident pages are read from /proc/self/pagemap, so these tests run on Linux only."""

from __future__ import annotations

import mmap
import os
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mal_desktop.core.io.pages import KEEP_BYTES, PageReleaser
from mal_desktop.core.io.safetensors_io import read_safetensors_tensors
from mal_desktop.core.io.state_dict_io import check_finite

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="page release and /proc/self/pagemap are Linux only")

_PRESENT = np.uint64(1 << 63)
TENSOR_MIB = 16


def whole_pages(tensor: torch.Tensor) -> tuple[int, int]:
    """The first and one-past-last page wholly inside ``tensor``'s bytes."""
    page, begin = mmap.PAGESIZE, tensor.data_ptr()
    return (begin + page - 1) // page, (begin + tensor.numel() * tensor.element_size()) // page


def resident_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor``'s whole pages that are resident in this process."""
    page = mmap.PAGESIZE
    first, last = whole_pages(tensor)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, (last - first) * 8, first * 8)
    finally:
        os.close(fd)
    return int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint64) & _PRESENT)) * page


@pytest.fixture
def large_file(tmp_path):
    """A file of 8 x 16 MiB float32 tensors: twice the bytes a pass keeps mapped."""
    count = 2 * KEEP_BYTES // (TENSOR_MIB << 20)
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "large.safetensors"
    save_file({f"t{i}": torch.randn(TENSOR_MIB << 18, generator=generator)
               for i in range(count)}, str(path))
    return path


def test_a_pass_over_a_large_file_keeps_at_most_keep_bytes_resident(large_file):
    state = read_safetensors_tensors(large_file)
    check_finite(large_file, state)  # reads every tensor, releasing pages as it goes
    resident = sum(resident_bytes(t) for t in state.values())
    total = sum(t.numel() * t.element_size() for t in state.values())
    assert total == 2 * KEEP_BYTES
    assert resident <= KEEP_BYTES, (resident >> 20, KEEP_BYTES >> 20)
    # the released pages still hold the file's values: the next read faults them back in
    again = read_safetensors_tensors(large_file)
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_a_small_pass_keeps_its_pages(large_file):
    """Below the threshold nothing is released (nor are the mappings read)."""
    state = read_safetensors_tensors(large_file)
    first = state["t0"]
    float(first.sum())
    PageReleaser().release(first)
    start, stop = whole_pages(first)
    assert resident_bytes(first) == (stop - start) * mmap.PAGESIZE


def test_written_pages_are_never_dropped(large_file):
    """A range this process wrote into (copy-on-write) is paged out, never discarded: the
    write survives the release."""
    state = read_safetensors_tensors(large_file)
    tensor = state["t0"]
    tensor[:10] = 7.0
    PageReleaser(keep_bytes=0).release(tensor)
    assert torch.all(tensor[:10] == 7.0)
    assert not torch.all(read_safetensors_tensors(large_file)["t0"][:10] == 7.0)
