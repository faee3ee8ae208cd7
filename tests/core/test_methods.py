"""Merge methods: lambda 0 is the base bit for bit; each method on hand-computable tensors."""

import numpy as np
import pytest
import torch

from mal_desktop.core.errors import PlanError
from mal_desktop.core.merge.methods import MERGE_METHODS, merge_tensor


@pytest.mark.parametrize("method", sorted(MERGE_METHODS))
def test_lambda_zero_returns_the_base_bit_for_bit(method):
    base = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    target = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    out = merge_tensor(method, base, target, 0.0)
    assert torch.equal(out, base) and out.dtype == base.dtype


def test_linear_and_task_arithmetic():
    base, target = torch.tensor([0.0, 2.0]), torch.tensor([4.0, 6.0])
    assert torch.allclose(merge_tensor("linear", base, target, 0.25), torch.tensor([1.0, 3.0]))
    assert torch.allclose(merge_tensor("linear", base, target, 1.0), target)
    assert torch.allclose(merge_tensor("task_arithmetic", base, target, 0.5, {"scale": 2.0}),
                          target)


def test_slerp_keeps_norm_between_orthogonal_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = merge_tensor("slerp", a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([0.5 ** 0.5, 0.5 ** 0.5]), atol=1e-6)
    assert torch.allclose(merge_tensor("slerp", a, a * 2, 0.5), a * 1.5)  # parallel: lerp


def test_ties_keeps_only_the_largest_task_vector_entries():
    base = torch.zeros(10)
    target = torch.arange(1.0, 11.0)
    out = merge_tensor("ties", base, target, 1.0, {"density": 0.2})
    assert torch.equal(out, torch.tensor([0.0] * 8 + [9.0, 10.0]))


def test_dare_drops_and_rescales_deterministically():
    base, target = torch.zeros(1000), torch.ones(1000)
    out = merge_tensor("dare", base, target, 1.0, {"drop": 0.5}, seed=3)
    kept = out != 0
    assert torch.allclose(out[kept], torch.full((int(kept.sum()),), 2.0))
    assert 400 < int(kept.sum()) < 600
    assert torch.equal(out, merge_tensor("dare", base, target, 1.0, {"drop": 0.5}, seed=3))


def test_bad_method_and_parameter_are_plan_errors():
    t = torch.zeros(2)
    with pytest.raises(PlanError, match="unknown merge method"):
        merge_tensor("average-ish", t, t, 0.5)
    with pytest.raises(PlanError, match="density"):
        merge_tensor("ties", t, t, 0.5, {"density": 3.0})


@pytest.mark.parametrize("method", sorted(MERGE_METHODS))
def test_float64_tensors_are_merged_in_float64(method):
    base = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = merge_tensor(method, base, target, 0.3, seed=2)
    assert out.dtype == torch.float64
    if method == "linear":
        assert torch.equal(merge_tensor(method, base, target, 1.0), target)
        assert torch.allclose(out, 0.7 * base + 0.3 * target, atol=1e-15, rtol=0)
    # Values to float64 precision, against each method's formula written out here in numpy
    # (default parameters): a float32 step anywhere inside would be off by ~1e-7.
    b, t = base.numpy(), target.numpy()
    if method == "dare":  # which entries survive is random: each is either dropped or rescaled
        kept = out.numpy() != b
        assert 0 < kept.sum() < kept.size
        expected = np.where(kept, b + 0.3 * (t - b) / (1 - 0.5), b)
    else:
        expected = _FLOAT64_REFERENCE[method](b, t, 0.3)
    assert np.allclose(out.numpy(), expected, rtol=0, atol=1e-12), method


def _slerp_reference(b: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    a, c = b.ravel(), t.ravel()
    omega = np.arccos(np.clip(a @ c / np.linalg.norm(a) / np.linalg.norm(c), -1.0, 1.0))
    mixed = (np.sin((1 - lam) * omega) * a + np.sin(lam * omega) * c) / np.sin(omega)
    return mixed.reshape(b.shape)


def _ties_reference(b: np.ndarray, t: np.ndarray, lam: float, density: float = 0.2) -> np.ndarray:
    delta = (t - b).ravel()
    keep = np.argsort(-np.abs(delta))[: int(np.ceil(density * delta.size))]
    trimmed = np.zeros_like(delta)
    trimmed[keep] = delta[keep]
    return b + lam * trimmed.reshape(b.shape)


_FLOAT64_REFERENCE = {
    "linear": lambda b, t, lam: (1 - lam) * b + lam * t,
    "task_arithmetic": lambda b, t, lam: b + lam * 1.0 * (t - b),
    "slerp": _slerp_reference,
    "ties": _ties_reference,
}

