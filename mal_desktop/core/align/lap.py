"""Linear assignment problems (LAP) on rectangular cost matrices.

Cost matrices are built with torch on :func:`~mal_desktop.core.device.compute_device`; the
assignment is solved exactly on a float64 CPU copy, on every device, by the Jonker-Volgenant
solver ``lapjvh`` of the ``lapx`` package (rectangular natively), or by
``scipy.optimize.linear_sum_assignment`` where lapx is not installed. Chosen by measurement
(benchmarks/lap_solvers.py): on weight-matching costs lapjvh reached scipy's optimum in every
case and was 1.9-27x faster at widths 512-8192, square and rectangular; lapx's solvers that pad
rectangles to squares were 10-400x slower than scipy there. On CUDA that copy is cheaper than solving on the
GPU: a torch auction solver was 4x to 100x slower on an H100 at widths 512 to 4096 (it now lives
in benchmarks/auction_lap.py, measured by benchmarks/lap_cuda.py).

A rectangular m x n LAP picks min(m, n) pairs, at most one per row and column. It has the same
optimum as the square LAP on the cost zero-padded to max(m, n) ("LAP-equivalence",
mal_method.md sec. 4): a padded row or column contributes zero whatever it is paired with.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import AlignmentError


class LapBuffer:
    """Memory for the CPU float64 copy of LAP costs, reused from one :func:`solve_lap` to the
    next.

    Coordinate descent solves hundreds of LAPs of a few shapes in one job. A fresh float64 copy
    of a large cost (32 MB at 2048 x 2048) is memory the allocator maps anew and the kernel
    zero-fills page by page at every call: a quarter of the LAP's time at that width
    (benchmarks/README.md). A job keeps one buffer, grown to its largest cost, and drops it at
    the end; the copy in it holds the same numbers, so the solver returns the same assignment.
    """

    def __init__(self) -> None:
        self._data: torch.Tensor | None = None

    def take(self, rows: int, cols: int) -> torch.Tensor:
        """An uninitialised rows x cols float64 CPU tensor in the buffer (valid until the next
        call)."""
        size = rows * cols
        if self._data is None or self._data.numel() < size:
            self._data = None  # free the smaller one before allocating the larger
            self._data = torch.empty(size, dtype=torch.float64)
        return self._data[:size].view(rows, cols)


def _to_numpy(cost: torch.Tensor, negate: bool = False,
              buffer: LapBuffer | None = None) -> np.ndarray:
    """``cost`` (or ``-cost``) as a CPU float64 array, in ``buffer`` when given."""
    if buffer is None:
        out = torch.empty(cost.shape, dtype=torch.float64)
    else:
        out = buffer.take(cost.shape[0], cost.shape[1])
    # one copy from any device and dtype (float32 -> float64 is exact); a cost on the GPU was
    # first copied to a new host tensor and then into the buffer
    out.copy_(cost.detach())
    if negate:
        out.neg_()  # exact too: the same numbers as negating a float64 copy
    array = out.numpy()
    if not np.isfinite(array).all():
        raise AlignmentError("cost matrix contains NaN or inf (are the weights finite?)")
    return array


def solve_lap(cost: torch.Tensor, maximize: bool = True,
              buffer: LapBuffer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the rectangular assignment problem on ``cost`` (m x n).

    Parameters:
        cost: m x n matrix on any device and of any float dtype; solved on a CPU float64 copy.
        maximize: maximise the total of the chosen entries (default) instead of minimising it.
        buffer: where to make that copy (:class:`LapBuffer`), for callers that solve many
            LAPs; a new array otherwise. The result is the same either way.
    Returns:
        (rows, cols): two int64 CPU tensors of length min(m, n); ``rows`` is sorted ascending and
        pair i assigns row ``rows[i]`` to column ``cols[i]``.
    Raises:
        AlignmentError: the matrix is not 2-D or holds NaN / inf.
    """
    if cost.ndim != 2:
        raise AlignmentError(f"cost matrix must be 2-D, got shape {tuple(cost.shape)}")
    if cost.shape[0] == 0 or cost.shape[1] == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    rows, cols = _SOLVER(cost, maximize, buffer)
    order = np.argsort(rows, kind="stable")
    return (torch.as_tensor(rows[order], dtype=torch.long),
            torch.as_tensor(cols[order], dtype=torch.long))


def _scipy_lap(cost: torch.Tensor, maximize: bool,
               buffer: LapBuffer | None = None) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(_to_numpy(cost, buffer=buffer), maximize=maximize)


def _lapx_lap(cost: torch.Tensor, maximize: bool,
              buffer: LapBuffer | None = None) -> tuple[np.ndarray, np.ndarray]:
    import lap

    array = _to_numpy(cost, negate=maximize, buffer=buffer)  # lapjvh minimises
    _, rows, cols = lap.lapjvh(array, extend_cost=array.shape[0] != array.shape[1])
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    keep = (rows >= 0) & (cols >= 0)  # unassigned rows/columns of a rectangle, if reported
    return rows[keep], cols[keep]


def _pick_solver():
    try:
        import lap  # noqa: F401  (the lapx package)
    except ImportError:
        return _scipy_lap
    return _lapx_lap


_SOLVER = _pick_solver()


# How much the objective J must grow before a new assignment replaces the current one, relative
# to |J| (absolute below |J| = 1). Both alignment loops (local alternation, coordinate descent)
# accept only such a gain; that is what makes them stop, since an equal-valued different optimum
# (dead or duplicate units, zero-padded slots) would otherwise be swapped in and out forever.
# 1e-9, not 1e-12: J is a float64 sum of up to ~1e6 products, computed in different orders for
# the old and the new assignment, and the worst-case rounding error of such a sum is
# (n - 1) * 2**-53 * sum|terms|, about 1e-10 of it at n = 1e6. A margin of 1e-12 would let that
# noise pass for a gain; 1e-9 stays above it, and a real gain below 1e-9 of J is not worth
# another sweep. (Coordinate descent builds its LAP costs in float32, rounded by about 1e-7,
# far above this margin: it judges a new match by J summed in float64 from exact products,
# never by the float32 LAP value; see align/products.py.)
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
