"""The one place that chooses where tensors are computed: CUDA when available, CPU otherwise.

``MAL_DEVICE=cpu`` (or ``cuda``) overrides the choice, e.g. to compare both in a benchmark.
"""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def compute_device() -> "torch.device":  # noqa: F821 - torch imported lazily
    """The device for cost matrices, assignment and evaluation."""
    import torch

    wanted = os.environ.get("MAL_DEVICE", "").strip().lower()
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_label() -> str:
    """Human-readable description for a status bar, e.g. 'CUDA: NVIDIA H100' or 'CPU'."""
    import torch

    dev = compute_device()
    if dev.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(dev)}"
    return "CPU"
