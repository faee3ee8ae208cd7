"""Linear assignment problems (LAP) on rectangular cost matrices.

Cost matrices are built with torch on :func:`~mal_desktop.core.device.compute_device`; the
assignment itself is solved by ``scipy.optimize.linear_sum_assignment`` (a shortest augmenting path
solver, exact) on a float64 CPU copy. On CUDA this means one device-to-host copy of an m x n matrix
per solve; for the layer widths of a model zoo (hundreds to a few thousand units) the copy and the
O(n^3) solve are small next to building the costs, and an exact solver keeps the monotonicity
guarantees of the alternating and coordinate-descent loops (an approximate GPU auction solver
could return a worse assignment than the current one).

A rectangular m x n LAP picks min(m, n) pairs, at most one per row and column. It has the same
optimum as the square LAP on the cost zero-padded to max(m, n) ("LAP-equivalence",
mal_method.md sec. 4): a padded row or column contributes zero whatever it is paired with.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import AlignmentError


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
        cost: m x n matrix on any device and of any float dtype (copied to CPU float64).
        maximize: maximise the total of the chosen entries (default) instead of minimising it.
    Returns:
        (rows, cols): two int64 CPU tensors of length min(m, n); ``rows`` is sorted ascending and
        pair i assigns row ``rows[i]`` to column ``cols[i]``.
    Raises:
        AlignmentError: the matrix is not 2-D or holds NaN / inf.
    """
    from scipy.optimize import linear_sum_assignment

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


def assignment_value(cost: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> float:
    """Total of ``cost[rows, cols]`` in float64 (the objective reached by an assignment)."""
    if rows.numel() == 0:
        return 0.0
    values = cost.detach().to(torch.float64)[rows.to(cost.device), cols.to(cost.device)]
    return float(values.sum().item())
