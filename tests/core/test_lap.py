"""Rectangular LAP: optimality and equivalence with the zero-padded square LAP (sec. 4, 9)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mal_desktop.core.align.lap import assignment_value, improves, solve_lap
from mal_desktop.core.errors import AlignmentError

def padded_square_lap(cost: torch.Tensor,
                      maximize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: solve the LAP on ``cost`` zero-padded to a square, drop the padded pairs.

    This is the "pad the narrower model with dead units, then permute" formulation of
    mal_method.md sec. 4; solve_lap must reach the same objective on the rectangular cost.
    """
    from scipy.optimize import linear_sum_assignment

    array = cost.detach().to("cpu", torch.float64).numpy()
    m, n = array.shape
    size = max(m, n)
    square = np.zeros((size, size), dtype=np.float64)
    square[:m, :n] = array
    rows, cols = linear_sum_assignment(square, maximize=maximize)
    keep = (rows < m) & (cols < n)
    return (torch.as_tensor(rows[keep], dtype=torch.long),
            torch.as_tensor(cols[keep], dtype=torch.long))


SHAPES = [(1, 1), (1, 6), (6, 1), (5, 5), (3, 8), (8, 3), (17, 11), (11, 17), (32, 32), (40, 7)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("maximize", [True, False])
def test_rectangular_equals_padded_square(shape: tuple[int, int], maximize: bool) -> None:
    gen = torch.Generator().manual_seed(100 * shape[0] + shape[1] + int(maximize))
    for _ in range(5):
        cost = torch.randn(shape, generator=gen, dtype=torch.float64)
        rows, cols = solve_lap(cost, maximize=maximize)
        prow, pcol = padded_square_lap(cost, maximize=maximize)
        k = min(shape)
        assert rows.numel() == cols.numel() == prow.numel() == k
        assert torch.equal(rows, torch.sort(rows).values)
        assert len(set(rows.tolist())) == k and len(set(cols.tolist())) == k
        assert assignment_value(cost, rows, cols) == pytest.approx(
            assignment_value(cost, prow, pcol), rel=1e-12, abs=1e-12)


def _brute_force(cost: torch.Tensor) -> float:
    m, n = cost.shape
    best = float("-inf")
    if m <= n:
        for cols in itertools.permutations(range(n), m):
            best = max(best, float(sum(cost[i, c] for i, c in enumerate(cols))))
    else:
        for rows in itertools.permutations(range(m), n):
            best = max(best, float(sum(cost[r, j] for j, r in enumerate(rows))))
    return best


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (2, 6)])
def test_solve_lap_is_optimal(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(7)
    cost = torch.randn(shape, generator=gen, dtype=torch.float64)
    rows, cols = solve_lap(cost)
    assert assignment_value(cost, rows, cols) == pytest.approx(_brute_force(cost))
    # minimising is maximising the negated cost
    rows_min, cols_min = solve_lap(cost, maximize=False)
    assert assignment_value(cost, rows_min, cols_min) == pytest.approx(-_brute_force(-cost))


def test_float32_and_identity_recovery() -> None:
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    cost = torch.eye(20)[:, perm].float()  # cost[i, perm[i]] = 1 is the unique optimum
    rows, cols = solve_lap(cost)
    assert torch.equal(rows, torch.arange(20))
    assert torch.equal(cols, torch.argsort(perm))
    assert rows.dtype == cols.dtype == torch.long


def test_empty_and_invalid() -> None:
    rows, cols = solve_lap(torch.zeros(0, 4))
    assert rows.numel() == cols.numel() == 0
    with pytest.raises(AlignmentError, match="NaN"):
        solve_lap(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(AlignmentError, match="2-D"):
        solve_lap(torch.zeros(3))


def test_improves_ignores_rounding_and_accepts_real_gains() -> None:
    # The same float64 objective summed in two orders differs by rounding only: neither order may
    # count as an improvement over the other, or the alignment loops would swap equal optima.
    terms = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    terms = terms.abs() + 0.1
    forward = sum(terms.tolist())
    pairwise = float(terms.sum())
    assert not improves(forward, pairwise) and not improves(pairwise, forward)
    assert improves(pairwise * (1 + 1e-8), pairwise)
    assert not improves(pairwise, pairwise * (1 + 1e-8))
    assert improves(1e-8, 0.0) and not improves(1e-10, 0.0)  # absolute below |J| = 1
