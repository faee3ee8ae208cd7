"""Optional activation matching (mal_method.md sec. 4): align one space by activation correlation.

When a probe batch is at hand, units of the two models that respond alike on the same inputs
correspond. The cost is the Pearson correlation of every base unit with every target unit over
the probe samples (and spatial positions, for conv feature maps); one rectangular LAP gives the
generalized permutation.
"""

from __future__ import annotations

import torch

from ..device import compute_device
from ..errors import AlignmentError
from .generalized import Match
from .lap import solve_lap


def _units_last(acts: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """(N, ..., units, ...) -> (samples, units): every other axis counts as a sample."""
    if acts.ndim < 2:
        raise AlignmentError(
            f"activations need a sample and a unit axis, got shape {tuple(acts.shape)}")
    return torch.movedim(acts, unit_dim, -1).reshape(-1, acts.shape[unit_dim])


def activation_cost(base_acts: torch.Tensor, target_acts: torch.Tensor, unit_dim: int = 1,
                    eps: float = 1e-8) -> torch.Tensor:
    """Correlation between base and target units on the same probe batch.

    Parameters:
        base_acts: (N, m) activations, or (N, m, H, W) feature maps with ``unit_dim`` = 1.
        target_acts: (N, n) or (N, n, H, W) on the same inputs (same N and spatial size).
        unit_dim: the axis holding the units.
        eps: guards units that never vary (their correlation is 0).
    Returns:
        (m x n) float64 correlation matrix on the compute device.
    Raises:
        AlignmentError: the two batches do not line up.
    """
    b = _units_last(base_acts, unit_dim)
    t = _units_last(target_acts, unit_dim)
    if b.shape[0] != t.shape[0]:
        raise AlignmentError(f"activations of different batches: base {tuple(base_acts.shape)}, "
                             f"target {tuple(target_acts.shape)}")
    device = compute_device()
    dtype = torch.float32 if device.type == "mps" else torch.float64
    b = b.detach().to(device, dtype)
    t = t.detach().to(device, dtype)
    b = b - b.mean(0, keepdim=True)
    t = t - t.mean(0, keepdim=True)
    b = b / (b.norm(dim=0, keepdim=True) + eps)
    t = t / (t.norm(dim=0, keepdim=True) + eps)
    return b.T @ t


def match_by_activations(base_acts: torch.Tensor, target_acts: torch.Tensor,
                         unit_dim: int = 1) -> Match:
    """Align one space by activations: the generalized permutation maximising total correlation.

    Parameters and raises as :func:`activation_cost`. Returns a :class:`Match` base <- target.
    """
    cost = activation_cost(base_acts, target_acts, unit_dim)
    rows, cols = solve_lap(cost)
    return Match.from_lap(rows, cols, cost.shape[0], cost.shape[1])
