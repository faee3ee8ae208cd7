"""Forward auction LAP (benchmarks/auction_lap.py, the contender of benchmarks/lap_cuda.py):
near-optimality bound, exactness, degenerate inputs. The exact reference is the core's solve_lap
(scipy), so the benchmark compares against a solver these tests show it agrees with."""

from __future__ import annotations

import pytest
import torch

from benchmarks.auction_lap import auction_lap
from mal_desktop.core.align.lap import assignment_value, solve_lap
from mal_desktop.core.errors import AlignmentError

SHAPES = [(2, 2), (7, 7), (40, 40), (5, 13), (13, 5), (30, 64), (64, 30)]


def _check_form(rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]) -> None:
    k = min(shape)
    assert rows.device.type == cols.device.type == "cpu"
    assert rows.dtype == cols.dtype == torch.long
    assert rows.numel() == cols.numel() == k
    assert torch.equal(rows, torch.sort(rows).values)
    assert len(set(rows.tolist())) == k and len(set(cols.tolist())) == k
    assert int(rows.max()) < shape[0] and int(cols.max()) < shape[1]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("maximize", [True, False])
def test_objective_within_bound_of_scipy(shape: tuple[int, int], maximize: bool) -> None:
    gen = torch.Generator().manual_seed(31 * shape[0] + shape[1] + int(maximize))
    for _ in range(3):
        cost = torch.randn(shape, generator=gen, dtype=torch.float64) * 3.0 + 1.0
        rows, cols = auction_lap(cost, maximize=maximize)
        _check_form(rows, cols, shape)
        exact = assignment_value(cost, *solve_lap(cost, maximize=maximize))
        got = assignment_value(cost, rows, cols)
        spread = max(float(cost.max()), 0.0) - min(float(cost.min()), 0.0)
        gap = exact - got if maximize else got - exact
        assert -1e-9 <= gap <= 1e-6 * spread + 1e-9


@pytest.mark.parametrize("shape", [(20, 20), (12, 25), (25, 12)])
def test_explicit_eps_final_bound(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(7)
    cost = torch.rand(shape, generator=gen, dtype=torch.float64)
    eps = 1e-3
    rows, cols = auction_lap(cost, eps_final=eps)
    exact = assignment_value(cost, *solve_lap(cost))
    assert exact - assignment_value(cost, rows, cols) <= 2 * min(shape) * eps + 1e-12


@pytest.mark.parametrize("shape", [(30, 30), (10, 24), (24, 10)])
@pytest.mark.parametrize("maximize", [True, False])
def test_integer_costs_exactly_optimal(shape: tuple[int, int], maximize: bool) -> None:
    gen = torch.Generator().manual_seed(shape[0] * shape[1])
    # Few distinct values: many ties, a hard case for exactness.
    cost = torch.randint(0, 6, shape, generator=gen).to(torch.float32)
    rows, cols = auction_lap(cost, maximize=maximize)
    _check_form(rows, cols, shape)
    exact = assignment_value(cost, *solve_lap(cost, maximize=maximize))
    assert assignment_value(cost, rows, cols) == exact


@pytest.mark.parametrize("transpose", [False, True])
def test_recovers_planted_permutation(transpose: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    n = 64
    perm = torch.randperm(n, generator=gen)
    cost = torch.rand(n, n, generator=gen)
    cost[torch.arange(n), perm] += 2.0
    if transpose:
        cost = torch.cat([cost.T, torch.rand(9, n, generator=gen)])  # 73 x 64, extra rows lose
        rows, cols = auction_lap(cost)
        assert torch.equal(rows[torch.argsort(cols)], perm)
    else:
        rows, cols = auction_lap(cost)
        assert torch.equal(rows, torch.arange(n)) and torch.equal(cols, perm)


def test_minimize_equals_maximize_of_negation() -> None:
    gen = torch.Generator().manual_seed(11)
    cost = torch.randint(-50, 50, (15, 21), generator=gen).double()
    a = auction_lap(cost, maximize=False)
    b = auction_lap(-cost, maximize=True)
    assert assignment_value(cost, *a) == assignment_value(cost, *b)


def test_degenerate_inputs() -> None:
    rows, cols = auction_lap(torch.tensor([[2.5]]))
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = auction_lap(torch.tensor([[1.0, 4.0, 2.0]]))
    assert rows.tolist() == [0] and cols.tolist() == [1]
    rows, cols = auction_lap(torch.tensor([[1.0], [4.0], [2.0]]), maximize=False)
    assert rows.tolist() == [0] and cols.tolist() == [0]
    for shape in [(6, 6), (4, 9), (9, 4)]:
        rows, cols = auction_lap(torch.full(shape, 0.7))
        _check_form(rows, cols, shape)
    for shape in [(0, 0), (0, 5), (5, 0)]:
        rows, cols = auction_lap(torch.zeros(shape))
        assert rows.numel() == cols.numel() == 0 and rows.dtype == torch.long


def test_falls_back_to_scipy_when_rounds_run_out() -> None:
    gen = torch.Generator().manual_seed(5)
    cost = torch.randn(25, 25, generator=gen, dtype=torch.float64)
    rows, cols = auction_lap(cost, max_rounds=1)
    _check_form(rows, cols, (25, 25))
    assert assignment_value(cost, rows, cols) == pytest.approx(
        assignment_value(cost, *solve_lap(cost)), abs=1e-12)


def test_rejects_bad_input() -> None:
    with pytest.raises(AlignmentError):
        auction_lap(torch.zeros(3))
    with pytest.raises(AlignmentError):
        auction_lap(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(AlignmentError):
        auction_lap(torch.eye(3), eps_final=0.0)
