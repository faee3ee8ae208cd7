"""Linear assignment problems (LAP) on rectangular cost matrices.

Cost matrices are built with torch on :func:`~mal_desktop.core.device.compute_device`. The
assignment is solved by one of two solvers:

* ``scipy.optimize.linear_sum_assignment`` (shortest augmenting path, exact) on a float64 CPU copy:
  the default on every device.
* :func:`~mal_desktop.core.align.auction.auction_lap` (forward auction with epsilon scaling, in
  torch on the tensor's device), opt-in with ``MAL_LAP=auction``. Its objective is within
  1e-6 * (cost range) of the optimum (exact for integer costs); the alternating and
  coordinate-descent loops accept only strict improvements of J, so such a near-optimal assignment
  cannot make J decrease.

Environment variable ``MAL_LAP``: ``scipy`` (default) or ``auction``. scipy stays the default on
CUDA too: on an H100 the auction was 4x to 100x slower than copying the matrix to the CPU and
running scipy at widths 512 to 4096 (benchmarks/README.md, "LAP on CUDA: auction vs scipy").

A rectangular m x n LAP picks min(m, n) pairs, at most one per row and column. It has the same
optimum as the square LAP on the cost zero-padded to max(m, n) ("LAP-equivalence",
mal_method.md sec. 4): a padded row or column contributes zero whatever it is paired with.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import AlignmentError

_LAP_MODES = ("scipy", "auction")


def _to_numpy(cost: torch.Tensor) -> np.ndarray:
    if cost.ndim != 2:
        raise AlignmentError(f"cost matrix must be 2-D, got shape {tuple(cost.shape)}")
    array = cost.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise AlignmentError("cost matrix contains NaN or inf (are the weights finite?)")
    return array


def solve_lap(cost: torch.Tensor, maximize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the rectangular assignment problem on ``cost`` (m x n).

    Parameters:
        cost: m x n matrix on any device and of any float dtype. Solved by scipy on a CPU
            float64 copy, or by the auction on the tensor's device with ``MAL_LAP=auction``.
        maximize: maximise the total of the chosen entries (default) instead of minimising it.
    Returns:
        (rows, cols): two int64 CPU tensors of length min(m, n); ``rows`` is sorted ascending and
        pair i assigns row ``rows[i]`` to column ``cols[i]``.
    Raises:
        AlignmentError: the matrix is not 2-D or holds NaN / inf, or ``MAL_LAP`` is unknown.
    """
    from scipy.optimize import linear_sum_assignment

    mode = os.environ.get("MAL_LAP", "").strip().lower() or "scipy"
    if mode not in _LAP_MODES:
        raise AlignmentError(f"MAL_LAP must be one of {', '.join(_LAP_MODES)}, got {mode!r}")
    if mode == "auction" and cost.ndim == 2:
        from .auction import auction_lap
        return auction_lap(cost, maximize=maximize)

    array = _to_numpy(cost)
    if array.shape[0] == 0 or array.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    rows, cols = linear_sum_assignment(array, maximize=maximize)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def padded_square_lap(cost: torch.Tensor,
                      maximize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the LAP on ``cost`` zero-padded to a square matrix, then drop the padded pairs.

    This is the "pad the narrower model with dead units, then permute" formulation; it exists to
    check LAP-equivalence against :func:`solve_lap` (both reach the same objective).

    Parameters:
        cost: m x n matrix.
        maximize: as in :func:`solve_lap`.
    Returns:
        (rows, cols) restricted to real rows and columns: min(m, n) pairs, rows sorted.
    Raises:
        AlignmentError: as :func:`solve_lap`.
    """
    from scipy.optimize import linear_sum_assignment

    array = _to_numpy(cost)
    m, n = array.shape
    size = max(m, n)
    if size == 0 or min(m, n) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    square = np.zeros((size, size), dtype=np.float64)
    square[:m, :n] = array
    rows, cols = linear_sum_assignment(square, maximize=maximize)
    keep = (rows < m) & (cols < n)
    return (torch.as_tensor(rows[keep], dtype=torch.long),
            torch.as_tensor(cols[keep], dtype=torch.long))


# How much the objective J must grow before a new assignment replaces the current one, relative
# to |J| (absolute below |J| = 1). Both alignment loops (local alternation, coordinate descent)
# accept only such a gain; that is what makes them stop, since an equal-valued different optimum
# (dead or duplicate units, zero-padded slots) would otherwise be swapped in and out forever.
# 1e-9, not 1e-12: J and the LAP values are float64 sums of up to ~1e6 products, computed in
# different orders for the old and the new assignment, and the worst-case rounding error of such
# a sum is (n - 1) * 2**-53 * sum|terms|, about 1e-10 of it at n = 1e6. A margin of 1e-12 would
# let that noise pass for a gain; 1e-9 stays above it, and a real gain below 1e-9 of J is not
# worth another sweep.
J_IMPROVEMENT_RTOL = 1e-9


def improves(new: float, old: float) -> bool:
    """True when objective value ``new`` beats ``old`` by more than float64 rounding can explain
    (:data:`J_IMPROVEMENT_RTOL`)."""
    return new > old + J_IMPROVEMENT_RTOL * max(1.0, abs(old))


def assignment_value(cost: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> float:
    """Total of ``cost[rows, cols]`` in float64 (the objective reached by an assignment)."""
    if rows.numel() == 0:
        return 0.0
    values = cost.detach().to(torch.float64)[rows.to(cost.device), cols.to(cost.device)]
    return float(values.sum().item())
