"""The MAL metrics on hand-computable curves (mal_method.md section 7)."""

import math

import pytest

from mal_desktop.core.evaluate.metrics import (CurveMetrics, barrier, lambda_grid, mean_loss,
                                               threshold_lambda)


def test_grid_default_has_21_points_from_0_to_1():
    grid = lambda_grid(21)
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0
    assert grid[1] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        lambda_grid(1)


def test_barrier_is_the_largest_excess_over_the_chord():
    lambdas = [0.0, 0.5, 1.0]
    # chord at 0.5 is (1 + 3) / 2 = 2; the curve is at 5 -> barrier 3
    assert barrier(lambdas, [1.0, 5.0, 3.0]) == pytest.approx(3.0)
    # a curve below its chord has barrier 0 (the endpoints themselves)
    assert barrier(lambdas, [1.0, 1.5, 3.0]) == pytest.approx(0.0)
    assert barrier(lambdas, [1.0, math.nan, 3.0]) == math.inf


def test_mean_loss_and_threshold():
    assert mean_loss([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    lambdas = [0.0, 0.25, 0.5, 0.75, 1.0]
    acc = [0.95, 0.945, 0.941, 0.90, 0.97]
    # within one point of 0.95 down to 0.94: lambda 0.5 is the last; 0.75 breaks it
    assert threshold_lambda(lambdas, acc, 0.01) == 0.5
    assert threshold_lambda(lambdas, [0.9, 0.95, 0.99, 1.0, 1.0]) == 1.0
    assert threshold_lambda(lambdas, [0.9, math.nan, 0.9, 0.9, 0.9]) == 0.0


def test_curve_metrics_bundle():
    m = CurveMetrics.from_points([0.0, 0.5, 1.0], [1.0, 5.0, 3.0], [0.9, 0.5, 0.8])
    assert m.barrier == pytest.approx(3.0) and m.mean_loss == pytest.approx(3.0)
    assert m.threshold == 0.0
    assert m.to_json()["loss"] == [1.0, 5.0, 3.0]
