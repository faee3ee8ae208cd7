"""The metrics registry: each metric on hand-computable per-sample arrays and curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mal_desktop.core.errors import MalError
from mal_desktop.core.evaluate import metric_registry as mr
from mal_desktop.core.evaluate.metric_registry import (METRICS, CurveSeries, SampleScores,
                                                       compute_curve_metrics,
                                                       compute_sample_metrics, get_metric,
                                                       metric_names, register_metric)


def scores(labels, preds, loss, confidence, categories=None, num_classes=3) -> SampleScores:
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    cats = np.asarray(categories if categories is not None else [str(c) for c in labels])
    return SampleScores(labels, preds, preds == labels, np.asarray(loss, dtype=float),
                        np.asarray(confidence, dtype=float), cats, num_classes)


# Labels 0 0 1 2, predictions 0 1 1 0: samples 0 and 2 are right.
S = scores([0, 0, 1, 2], [0, 1, 1, 0], [0.1, 2.0, 0.3, 1.5], [0.95, 0.95, 0.55, 0.55])


def test_builtin_names_and_kinds() -> None:
    assert {"accuracy", "loss", "per_class_accuracy", "ece"} <= set(metric_names("sample"))
    assert {"barrier", "mean_lmc_loss", "threshold", "target_task_accuracy"} <= \
        set(metric_names("curve"))
    assert get_metric("per_class_accuracy").per_category
    assert get_metric("loss").higher_is_better is False


def test_accuracy_loss_per_class() -> None:
    values = compute_sample_metrics(["accuracy", "loss", "per_class_accuracy"], S)
    assert values["accuracy"] == 0.5
    assert values["loss"] == pytest.approx((0.1 + 2.0 + 0.3 + 1.5) / 4)
    assert values["per_class_accuracy"] == {"0": 0.5, "1": 1.0, "2": 0.0}


def test_ece_hand_computed() -> None:
    # Confidence 0.95 (bin 14): samples 0 (right) and 1 (wrong) -> |0.5 - 0.95| = 0.45.
    # Confidence 0.55 (bin 8): samples 2 (right) and 3 (wrong) -> |0.5 - 0.55| = 0.05.
    assert mr.expected_calibration_error(S) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_ece_bin_edges_fall_into_the_lower_bin() -> None:
    # 0.2 = 3/15 is the upper edge of bin 3 (0.1333, 0.2]; 0.21 lies in bin 4. Separate bins:
    # ECE = 0.5 * |1 - 0.2| + 0.5 * |0 - 0.21|. One merged bin would give |0.5 - 0.205|.
    s = scores([0, 0], [0, 1], [0.1, 0.1], [0.2, 0.21])
    assert mr.expected_calibration_error(s) == pytest.approx(0.5 * 0.8 + 0.5 * 0.21)
    assert mr.expected_calibration_error(s, bins=1) == pytest.approx(abs(0.5 - 0.205))


def test_ece_is_zero_when_calibrated_and_nan_when_empty() -> None:
    s = scores([1, 2], [1, 2], [0.0, 0.0], [1.0, 1.0])
    assert mr.expected_calibration_error(s) == 0.0
    empty = S.subset(np.zeros(4, dtype=bool))
    assert math.isnan(mr.expected_calibration_error(empty))
    assert math.isnan(mr.accuracy(empty))


def test_subset_and_array_round_trip() -> None:
    part = S.subset(S.labels == 0)
    assert len(part) == 2 and part.correct.tolist() == [True, False]
    back = SampleScores.from_arrays(S.to_arrays())
    for name in ("labels", "preds", "correct", "loss", "confidence", "categories"):
        assert np.array_equal(getattr(back, name), getattr(S, name))
    assert back.num_classes == 3


def test_mismatched_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="preds"):
        SampleScores(np.zeros(3, np.int64), np.zeros(2, np.int64), np.zeros(3, bool),
                     np.zeros(3), np.zeros(3), np.array(["a"] * 3), 2)


CURVE = CurveSeries(lambdas=(0.0, 0.5, 1.0), loss=(1.0, 3.0, 2.0),
                    accuracy=(0.90, 0.895, 0.5), target_accuracy=(0.1, 0.4, 0.95))


def test_curve_metrics_hand_computed() -> None:
    values = compute_curve_metrics(["barrier", "mean_lmc_loss", "threshold",
                                    "target_task_accuracy"], CURVE)
    assert values["barrier"] == pytest.approx(3.0 - 1.5)      # chord at 0.5 is 1.5
    assert values["mean_lmc_loss"] == pytest.approx(2.0)
    assert values["threshold"] == 0.5                          # 0.895 is within one point
    assert values["target_task_accuracy"] == pytest.approx(0.4)  # target task at lambda* 0.5


def test_target_task_accuracy_needs_the_target_curve() -> None:
    bare = CurveSeries((0.0, 1.0), (1.0, 1.0), (0.9, 0.9))
    with pytest.raises(MalError, match="target's dataset"):
        compute_curve_metrics(["target_task_accuracy"], bare)


def test_unknown_metric_names_the_choices() -> None:
    with pytest.raises(MalError, match="accuracy"):
        get_metric("acuracy")
    with pytest.raises(MalError, match="unknown curve metric 'accuracy'"):
        compute_curve_metrics(["accuracy"], CURVE)


def test_registering_a_metric_is_one_function() -> None:
    try:
        @register_metric("error_rate_test", "sample", "1 - accuracy", higher_is_better=False)
        def _error_rate(s: SampleScores) -> float:
            return 1.0 - float(s.correct.mean())

        assert compute_sample_metrics(["error_rate_test"], S) == {"error_rate_test": 0.5}
        with pytest.raises(ValueError, match="already registered"):
            register_metric("error_rate_test", "sample", "again")(_error_rate)
        with pytest.raises(ValueError, match="kind"):
            register_metric("x", "histogram", "bad kind")
    finally:
        METRICS.pop("error_rate_test", None)
