"""Pinned numerics: the settings under which zoo training (and the study's measurements) give
bit-identical numbers on any x86-64 CPU with the pinned torch.

Two layers:

- :func:`deterministic_torch`, in any process: one torch thread, deterministic algorithms,
  oneDNN (mkldnn) off - each restored afterwards. This removes the dependence on the thread
  count (parallel reductions add in a thread-dependent order) and on oneDNN's per-CPU kernels.
- :data:`PINNED_ENV`, only for a fresh process (:func:`pinned_environ` around its start,
  :func:`enter_pinned_process` first thing in it): ATen's scalar kernels instead of the
  AVX2/AVX-512 ones the CPU would pick, and MKL's conditional numerical reproducibility mode.
  Measured on this project: the same seeded training gives three different models with ATen's
  default, AVX2 and AVX-512 kernels, and again different ones with 1 and 2 threads. Both
  settings are read once per process, when the first kernel runs, so they cannot be switched
  on inside a process that already computed something.

Seeds and data order are the caller's (``train_job`` seeds torch and shuffles with a private
generator).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import MalError

# Environment of a pinned worker process (read by ATen and MKL at their first use).
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's portable kernels, not the CPU's vector units
    "MKL_CBWR": "COMPATIBLE",          # MKL: the same results on every x86-64 CPU
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MAL_DEVICE": "cpu",               # the pinned numbers are CPU numbers
}
PINNED_CAPABILITY = "DEFAULT"  # what torch.backends.cpu.get_cpu_capability() reports then
TRAIN_THREADS = 1

_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def deterministic_torch(threads: int = TRAIN_THREADS) -> Iterator[None]:
    """Within the block: ``threads`` torch threads, deterministic algorithms, oneDNN off.

    Every setting is restored on exit, also on an exception, so callers (the GUI) keep theirs.
    """
    import torch

    saved_threads = torch.get_num_threads()
    saved_det = torch.are_deterministic_algorithms_enabled()
    saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    saved_dnn = torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved_dnn
        torch.use_deterministic_algorithms(saved_det, warn_only=saved_warn)
        torch.set_num_threads(saved_threads)


@contextlib.contextmanager
def pinned_environ() -> Iterator[None]:
    """``os.environ`` holds :data:`PINNED_ENV` within the block: start worker processes here
    (a spawned process copies the environment when it starts)."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in PINNED_ENV}
        os.environ.update(PINNED_ENV)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def enter_pinned_process() -> None:
    """First thing in a pinned worker process: set the environment (in case the process was
    not started under :func:`pinned_environ`), one torch thread, deterministic algorithms and
    oneDNN off for the process's life (it is a dedicated worker), and check that ATen really
    runs its portable kernels. Raises MalError when it does not (a kernel ran before)."""
    os.environ.update(PINNED_ENV)
    import torch

    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.enabled = False
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != PINNED_CAPABILITY:
        raise MalError(f"a pinned worker runs ATen's {capability} kernels, not "
                       f"{PINNED_CAPABILITY}: its numbers would depend on the CPU")


def numerics() -> dict[str, Any]:
    """The versions and settings that determine the zoo's and the study's numbers."""
    import platform
    import sys

    import numpy
    import scipy
    import torch

    from ... import __version__

    return {"torch": torch.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "python": sys.version.split()[0], "mal_desktop": __version__,
            "machine": platform.machine(), "aten_capability": PINNED_CAPABILITY,
            "env": dict(PINNED_ENV), "torch_threads": TRAIN_THREADS,
            "deterministic_algorithms": True, "mkldnn": False}
