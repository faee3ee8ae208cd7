"""The staged evaluation pipeline: exact per-sample scores, per-category aggregation, stages
chosen by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mal_desktop.core.errors import DatasetError, MalError
from mal_desktop.core.evaluate.datasets import Dataset
from mal_desktop.core.evaluate.evaluator import evaluate_module
from mal_desktop.core.evaluate.pipeline import (STAGES, PipelineSpec, log_softmax, register_stage,
                                                run_pipeline, samples_of)
from mal_desktop.core.io.model import LoadedModel


def _model() -> LoadedModel:
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        lin.bias.zero_()
    return LoadedModel(lin.eval(), {"kind": "memory"}, (2,), 3, metadata={"name": "lin"})


# Logits W x: (2,0,-2), (0,3,-3), (-1,-1,2), (1,0.5,-1.5); predictions 0, 1, 2, 0.
X = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0], [1.0, 0.5]])
Y = torch.tensor([0, 1, 2, 2])
LOGITS = [(2, 0, -2), (0, 3, -3), (-1, -1, 2), (1, 0.5, -1.5)]


def _data(x=X, y=Y, names=("zero", "one", "two")) -> Dataset:
    return Dataset("toy", x[:0], y[:0], x, y, 3, class_names=tuple(names))


def _hand_loss(row, label) -> float:
    return math.log(sum(math.exp(v) for v in row)) - row[label]


def test_per_sample_scores_are_exact() -> None:
    result = run_pipeline(_model(), samples_of(_data()))
    s = result.scores
    assert s.preds.tolist() == [0, 1, 2, 0]
    assert s.correct.tolist() == [True, True, True, False]
    expected = [_hand_loss(r, y) for r, y in zip(LOGITS, Y.tolist())]
    assert s.loss == pytest.approx(expected, rel=1e-6)
    conf = [max(math.exp(v) for v in r) / sum(math.exp(v) for v in r) for r in LOGITS]
    assert s.confidence == pytest.approx(conf, rel=1e-6)
    assert s.categories.tolist() == ["zero", "one", "two", "two"]


def test_overall_metrics_agree_with_the_evaluator() -> None:
    result = run_pipeline(_model(), samples_of(_data()), ["accuracy", "loss"])
    reference = evaluate_module(_model().module, X, Y)
    assert result.metrics["accuracy"] == reference.accuracy == 0.75
    assert result.metrics["loss"] == pytest.approx(reference.loss, rel=1e-6)
    assert set(result.metrics) == {"accuracy", "loss"}


def test_aggregation_per_category_tag() -> None:
    result = run_pipeline(_model(), samples_of(_data()), ["accuracy", "loss",
                                                          "per_class_accuracy"])
    cats = result.per_category
    assert list(cats) == ["one", "two", "zero"]  # text order for non-numeric tags
    assert cats["two"]["n"] == 2 and cats["two"]["accuracy"] == 0.5
    assert cats["zero"]["accuracy"] == 1.0
    assert cats["two"]["loss"] == pytest.approx((_hand_loss(LOGITS[2], 2) +
                                                 _hand_loss(LOGITS[3], 2)) / 2, rel=1e-6)
    assert "per_class_accuracy" not in cats["two"]  # per-category metrics are not nested
    assert result.metrics["per_class_accuracy"] == {"0": 1.0, "1": 1.0, "2": 0.5}


def test_stages_are_chosen_by_name() -> None:
    name = "temperature-4-test"
    try:
        @register_stage("postprocess", name, "softmax of logits / 4")
        def _soft(logits: np.ndarray) -> np.ndarray:
            return log_softmax(np.asarray(logits) / 4.0)

        plain = run_pipeline(_model(), samples_of(_data()))
        soft = run_pipeline(_model(), samples_of(_data()),
                            spec=PipelineSpec(postprocess=name, aggregate="none"))
        # A temperature keeps the argmax and lowers every confidence.
        assert soft.metrics["accuracy"] == plain.metrics["accuracy"]
        assert (soft.scores.confidence < plain.scores.confidence).all()
        assert soft.metrics["ece"] != plain.metrics["ece"]
        assert soft.per_category == {} and plain.per_category
        assert PipelineSpec(postprocess=name).key() == f"batch/{name}/classification/category"
    finally:
        STAGES["postprocess"].pop(name, None)
    with pytest.raises(MalError, match="unknown postprocess stage 'nope'; known: softmax"):
        run_pipeline(_model(), samples_of(_data()), spec=PipelineSpec(postprocess="nope"))
    with pytest.raises(MalError, match="unknown sample metric"):
        run_pipeline(_model(), samples_of(_data()), ["barrier"])


def test_inputs_are_reshaped_when_sizes_agree() -> None:
    base = _model()
    model = LoadedModel(nn.Sequential(nn.Flatten(), base.module).eval(), {"kind": "memory"},
                        (1, 2), 3)
    result = run_pipeline(model, samples_of(_data()), ["accuracy"])
    assert result.metrics["accuracy"] == 0.75


def test_samples_that_do_not_fit_are_refused() -> None:
    with pytest.raises(DatasetError, match="expects"):
        run_pipeline(_model(), samples_of(_data(x=torch.zeros(4, 3))))
    with pytest.raises(DatasetError, match="only 3 classes"):
        run_pipeline(_model(), samples_of(_data(y=torch.tensor([0, 1, 2, 5]))))
    with pytest.raises(DatasetError, match="no train samples"):
        samples_of(_data(), "train")


def test_class_names_default_to_indices() -> None:
    data = Dataset("toy", X[:0], Y[:0], X, Y, 3)
    assert samples_of(data).categories.tolist() == ["0", "1", "2", "2"]


def test_log_softmax_is_stable() -> None:
    out = log_softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0]]))
    assert np.isfinite(out).all()
    assert out[0, 0] == pytest.approx(0.0) and out[0, 1] == pytest.approx(-1000.0)
    assert out[1] == pytest.approx([math.log(0.5)] * 2)


def test_nan_logits_are_never_correct() -> None:
    nan_model = LoadedModel(nn.Linear(2, 3).eval(), {"kind": "memory"}, (2,), 3)
    with torch.no_grad():
        nan_model.module.weight.fill_(float("nan"))
    result = run_pipeline(nan_model, samples_of(_data()))
    assert result.metrics["accuracy"] == 0.0
    assert math.isnan(result.metrics["loss"]) and math.isnan(result.metrics["ece"])
