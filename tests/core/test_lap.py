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


SMALL = [(m, n) for m in range(1, 8) for n in range(1, 8)]  # every shape brute force can afford
LARGE = [(3, 8), (8, 3), (17, 11), (11, 17), (32, 32), (40, 7)]


def _brute_force(cost: np.ndarray, maximize: bool = True) -> float:
    """Best total over every assignment of min(m, n) pairs, by enumerating all of them."""
    if cost.shape[0] > cost.shape[1]:
        cost = cost.T
    m, n = cost.shape
    choices = np.array(list(itertools.permutations(range(n), m)), dtype=np.int64)
    totals = cost[np.arange(m), choices].sum(axis=1)
    return float(totals.max() if maximize else totals.min())


def _padded(cost: np.ndarray) -> np.ndarray:
    size = max(cost.shape)
    square = np.zeros((size, size))
    square[: cost.shape[0], : cost.shape[1]] = cost
    return square


def _linprog_optimum(cost: np.ndarray, maximize: bool) -> float:
    """The LAP optimum as a linear program solved by HiGHS, independently of the LAP solvers.

    The narrower side is fully assigned (sums == 1), the other at most once (sums <= 1); the
    bipartite constraint matrix is totally unimodular, so the LP optimum is the LAP optimum.
    """
    from scipy.optimize import linprog

    m, n = cost.shape
    rows = np.zeros((m, m * n))
    cols = np.zeros((n, m * n))
    for i in range(m):
        rows[i, i * n:(i + 1) * n] = 1.0
    for j in range(n):
        cols[j, j::n] = 1.0
    full, partial = (rows, cols) if m <= n else (cols, rows)
    c = -cost.ravel() if maximize else cost.ravel()
    res = linprog(c, A_ub=partial, b_ub=np.ones(len(partial)), A_eq=full,
                  b_eq=np.ones(len(full)), bounds=(0, 1), method="highs")
    assert res.status == 0, res.message
    return float(-res.fun if maximize else res.fun)


def _check_assignment(cost: np.ndarray, rows: torch.Tensor, cols: torch.Tensor) -> float:
    """Assert (rows, cols) is a valid rectangular assignment; return its total (numpy)."""
    k = min(cost.shape)
    r, c = rows.tolist(), cols.tolist()
    assert len(r) == len(c) == k
    assert r == sorted(r) and len(set(r)) == k and len(set(c)) == k
    assert all(0 <= i < cost.shape[0] for i in r) and all(0 <= j < cost.shape[1] for j in c)
    return float(cost[r, c].sum()) if k else 0.0


@pytest.mark.parametrize("shape", SMALL)
@pytest.mark.parametrize("maximize", [True, False])
def test_solve_lap_is_optimal_by_brute_force(shape: tuple[int, int], maximize: bool) -> None:
    rng = np.random.default_rng(100 * shape[0] + shape[1] + 7 * maximize)
    # continuous costs, and small integers with many ties (several optimal assignments)
    for cost in [rng.standard_normal(shape) for _ in range(3)] + [rng.integers(-2, 3, shape)]:
        cost = cost.astype(np.float64)
        rows, cols = solve_lap(torch.from_numpy(cost), maximize=maximize)
        best = _brute_force(cost, maximize)
        assert _check_assignment(cost, rows, cols) == pytest.approx(best, rel=1e-12, abs=1e-12)
        assert assignment_value(torch.from_numpy(cost), rows, cols) == pytest.approx(
            best, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("shape", SMALL)
def test_lap_equivalence_rectangular_equals_padded_square_by_brute_force(
        shape: tuple[int, int]) -> None:
    """mal_method.md sec. 9: the rectangular optimum equals the zero-padded square optimum."""
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    for _ in range(3):
        cost = rng.standard_normal(shape)
        rectangular = _brute_force(cost)
        square = _brute_force(_padded(cost))
        assert rectangular == pytest.approx(square, rel=1e-12, abs=1e-12)
        prow, pcol = padded_square_lap(torch.from_numpy(cost))
        assert _check_assignment(cost, prow, pcol) == pytest.approx(square, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("shape", LARGE)
@pytest.mark.parametrize("maximize", [True, False])
def test_large_shapes_reach_the_linear_programming_optimum(shape: tuple[int, int],
                                                           maximize: bool) -> None:
    gen = torch.Generator().manual_seed(100 * shape[0] + shape[1] + int(maximize))
    for _ in range(3):
        cost = torch.randn(shape, generator=gen, dtype=torch.float64)
        optimum = _linprog_optimum(cost.numpy(), maximize)
        rows, cols = solve_lap(cost, maximize=maximize)
        assert _check_assignment(cost.numpy(), rows, cols) == pytest.approx(optimum, rel=1e-9)
        prow, pcol = padded_square_lap(cost, maximize=maximize)
        assert _check_assignment(cost.numpy(), prow, pcol) == pytest.approx(optimum, rel=1e-9)
        # the LP on the zero-padded square: LAP-equivalence through an independent path
        assert _linprog_optimum(_padded(cost.numpy()), maximize) == pytest.approx(optimum,
                                                                                   rel=1e-9)


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


@pytest.mark.parametrize("solver", ["lapx", "scipy"])
@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3), (6, 1)])
def test_both_solvers_reach_the_brute_force_optimum(solver, shape, monkeypatch) -> None:
    """lapx's lapjvh is the default where installed, scipy the fallback: both must be exact,
    return sorted rows and work for maximising and minimising."""
    from mal_desktop.core.align import lap

    if solver == "lapx":
        pytest.importorskip("lap")
    monkeypatch.setattr(lap, "_SOLVER", lap._lapx_lap if solver == "lapx" else lap._scipy_lap)
    rng = np.random.default_rng(sum(shape))
    for maximize in (True, False):
        cost = rng.standard_normal(shape)
        rows, cols = solve_lap(torch.from_numpy(cost), maximize=maximize)
        assert len(rows) == min(shape) and torch.equal(rows, rows.sort().values)
        assert len(set(cols.tolist())) == len(cols)
        value = float(cost[rows.numpy(), cols.numpy()].sum())
        assert value == pytest.approx(_brute_force(cost, maximize), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("solver", ["lapx", "scipy"])
def test_buffer_gives_the_same_assignments(solver, monkeypatch) -> None:
    """A reused LapBuffer (larger, smaller, then rectangular costs; float32 and float64) must
    give exactly what a fresh copy gives, and leave the caller's cost untouched."""
    from mal_desktop.core.align import lap

    if solver == "lapx":
        pytest.importorskip("lap")
    monkeypatch.setattr(lap, "_SOLVER", lap._lapx_lap if solver == "lapx" else lap._scipy_lap)
    buffer = lap.LapBuffer()
    gen = torch.Generator().manual_seed(4)
    for shape, dtype in [((30, 30), torch.float32), ((8, 8), torch.float64),
                         ((12, 40), torch.float32), ((40, 12), torch.float32),
                         ((50, 50), torch.float32)]:
        cost = torch.randn(shape, generator=gen, dtype=dtype).round(decimals=1)  # with ties
        kept = cost.clone()
        for maximize in (True, False):
            fresh = solve_lap(cost, maximize=maximize)
            reused = solve_lap(cost, maximize=maximize, buffer=buffer)
            assert all(torch.equal(a, b) for a, b in zip(fresh, reused))
        assert torch.equal(cost, kept)
    with pytest.raises(AlignmentError, match="NaN"):
        solve_lap(torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), buffer=buffer)
