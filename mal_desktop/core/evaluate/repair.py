"""Optional REPAIR-style reset of BatchNorm statistics after merging (mal_method.md section 5).

Interpolating two networks' weights also interpolates their BatchNorm running statistics, which
then no longer describe the merged network's activations; that alone can raise the loss barrier.
Re-estimating them on a batch of data is an addition to MAL, so callers report when it is used.
"""

from __future__ import annotations

import torch
from torch import nn


def reset_batchnorm_stats(module: nn.Module, x: torch.Tensor, batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm's running mean/var of ``module`` on inputs ``x``, in place.

    Uses a cumulative average over all of ``x`` (momentum None), then returns the module to eval
    mode. Returns the number of BatchNorm layers reset (0: nothing to repair, module untouched).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(x) == 0:
        return 0
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
        bn.train()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                module(x[start:start + batch_size])
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        module.eval()
    return len(norms)
