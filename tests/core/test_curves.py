"""Interpolation curves on real zoo models (mal_method.md sections 7 and 9)."""

from __future__ import annotations

import numpy as np
from pathlib import Path

import pytest
import torch

from mal_desktop.core.errors import DatasetError, PlanError
from mal_desktop.core.evaluate.datasets import load_dataset
from mal_desktop.core.evaluate.evaluator import evaluate_model
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.spec import permute_state
from mal_desktop.core.io.files import load_model, save_model
from mal_desktop.core.jobs import ModelCache, curve_series, model_curve_job
from mal_desktop.core.progress import CancelToken, Cancelled, run_job


def _path(zoo, name):
    return str(zoo.path_of(name))


def test_curve_endpoints_are_the_two_models_losses(small_zoo):
    base, target = _path(small_zoo, "mlp-w32-s0"), _path(small_zoo, "mlp-w32-s1")
    result = run_job(model_curve_job(base, target, "digits", grid=5))
    data = load_dataset("digits")
    lb = evaluate_model(load_model(base), data)
    lt = evaluate_model(load_model(target), data)
    assert result.lambdas == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert result.naive.loss[0] == lb.loss and result.naive.loss[-1] == lt.loss
    assert result.aligned.loss[0] == lb.loss
    # the aligned end point is the target with permuted hidden units: the same function
    assert result.aligned.loss[-1] == pytest.approx(lt.loss, abs=1e-5)
    assert result.naive.accuracy[0] == lb.accuracy


def test_aligned_merging_has_lower_mean_lmc_loss_than_naive(small_zoo):
    result = run_job(model_curve_job(_path(small_zoo, "mlp-w32-s0"),
                                     _path(small_zoo, "mlp-w32-s1"), "digits", grid=11))
    assert result.aligned.mean_loss < result.naive.mean_loss
    assert result.aligned.barrier < result.naive.barrier


@pytest.mark.parametrize("name", ["mlp-w64-s0", "cnn-w8-s0", "resnet-w8-s0"])
def test_a_permuted_copy_aligns_back_with_no_barrier(small_zoo, tmp_path, name):
    model = load_model(small_zoo.path_of(name))
    spec = discover_spec(model)
    gen = torch.Generator().manual_seed(7)
    perms = {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}
    permuted = model.with_state(permute_state(model.state(), spec, perms))
    path = tmp_path / "permuted.safetensors"
    save_model(permuted, path)
    result = run_job(model_curve_job(str(small_zoo.path_of(name)), str(path), "digits", grid=6))
    assert result.aligned.barrier < 1e-4
    assert max(result.aligned.loss) - min(result.aligned.loss) < 1e-4
    assert result.naive.barrier > result.aligned.barrier


def _unit_selection(merged: torch.Tensor, donor: torch.Tensor) -> list[int]:
    """For each entry of ``merged`` (1-D), the one index of ``donor`` holding the same value."""
    found = []
    for value in merged.tolist():
        hits = (donor == value).nonzero().flatten().tolist()
        assert len(hits) == 1, f"{value} occurs {len(hits)} times in the donor"
        found.append(hits[0])
    return found


@pytest.mark.parametrize("target, align", [("mlp-w64-s0", "local"),  # base narrower: drop 32
                                           ("mlp-w32-s1", "chain")])  # equal widths
def test_layer_curve_merges_only_the_given_layers(small_zoo, target, align):
    base_path, target_path = _path(small_zoo, "mlp-w32-s0"), _path(small_zoo, target)
    layers = [("layers.1", "layers.1")]
    result = run_job(model_curve_job(base_path, target_path, "digits", grid=3, layers=layers,
                                     align=align))
    data = load_dataset("digits")
    base, donor = load_model(base_path), load_model(target_path)
    b, t = base.state(), donor.state()
    assert result.lambdas == (0.0, 0.5, 1.0)
    base_loss = evaluate_model(base, data).loss
    assert result.naive.loss[0] == base_loss and result.aligned.loss[0] == base_loss

    # The states behind the curve, lambda -> base-architecture state.
    series = curve_series(ModelCache(), base_path, target_path, align=align, layers=layers)
    named = {"layers.1.weight", "layers.1.bias"}
    for name, state_at in series.as_dict().items():
        mid, one = state_at(0.5), state_at(1.0)
        for lam, state in ((0.5, mid), (1.0, one)):
            assert state.keys() == b.keys()
            for key in b:
                if key in named:
                    assert not torch.equal(state[key], b[key]), (name, lam, key)
                else:  # layers.0 and the head are the base's, bit for bit
                    assert torch.equal(state[key], b[key]), (name, lam, key)
        for key in named:  # the merge rule: (1 - lambda) base + lambda aligned target
            assert torch.allclose(mid[key], 0.5 * b[key] + 0.5 * one[key], atol=1e-6), key
        # the curve scored exactly these states
        curve = getattr(result, name)
        for i, state in ((1, mid), (2, one)):
            assert curve.loss[i] == pytest.approx(
                evaluate_model(base.with_state(state), data).loss, rel=1e-6), (name, i)

        # At lambda 1 the layer IS the target's layer under a generalized permutation: base slot
        # i holds donor unit rows[i] (found by its bias, values are distinct) and its weight row
        # reads donor inputs cols[j], the same selection for every row.
        w, bias = one["layers.1.weight"], one["layers.1.bias"]
        rows = _unit_selection(bias, t["layers.1.bias"])
        picked = t["layers.1.weight"][rows]
        cols = _unit_selection(w[0], picked[0])
        assert torch.equal(w, picked[:, cols]), name
        assert len(set(rows)) == len(rows) == 32 and len(set(cols)) == len(cols) == 32
        if t["layers.1.weight"].shape == b["layers.1.weight"].shape:  # widths match: all units
            assert sorted(rows) == sorted(cols) == list(range(32))
        if name == "naive":  # index alignment: the first 32 units, in order
            assert rows == cols == list(range(32))
        else:  # the alignment moved units (two independently trained models)
            assert rows != list(range(32)) and cols != list(range(32))


def test_whole_model_curve_needs_equal_architectures(small_zoo):
    """Two widths of one family 'differed in architecture'; they differ in width."""
    with pytest.raises(PlanError, match="differ in width .* pass --layers SRC:DST"):
        run_job(model_curve_job(_path(small_zoo, "mlp-w32-s0"), _path(small_zoo, "mlp-w64-s0"),
                                "digits", grid=3))
    with pytest.raises(PlanError, match="differ in architecture"):
        run_job(model_curve_job(_path(small_zoo, "mlp-w32-s0"), _path(small_zoo, "cnn-w8-s0"),
                                "digits", grid=3))


def test_user_npz_dataset_and_bad_npz(small_zoo, tmp_path):
    data = load_dataset("digits")
    good = tmp_path / "mine.npz"
    np.savez(good, x=data.x_test.numpy().reshape(len(data.x_test), 64), y=data.y_test.numpy())
    result = run_job(model_curve_job(_path(small_zoo, "mlp-w32-s0"),
                                     _path(small_zoo, "mlp-w32-s1"), str(good), grid=3))
    assert result.naive.loss[0] == pytest.approx(
        evaluate_model(load_model(small_zoo.path_of("mlp-w32-s0")), data).loss, rel=1e-6)
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((3, 64)))
    with pytest.raises(DatasetError, match="bad.npz: a dataset .npz needs arrays 'x' and 'y'"):
        load_dataset(str(bad))


def test_curve_job_cancels(small_zoo):
    token = CancelToken()
    job = model_curve_job(_path(small_zoo, "mlp-w32-s0"), _path(small_zoo, "mlp-w32-s1"),
                          "digits", grid=21, cancel=token)
    seen = []

    def on_event(event):
        seen.append(event)
        if len(seen) == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        run_job(job, on_event)
    assert len(seen) < 20


def test_activation_matching_recovers_a_permuted_copy_and_beats_naive(small_zoo, tmp_path):
    name = "cnn-w8-s0"
    model = load_model(small_zoo.path_of(name))
    spec = discover_spec(model)
    gen = torch.Generator().manual_seed(3)
    perms = {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}
    path = tmp_path / "permuted.safetensors"
    save_model(model.with_state(permute_state(model.state(), spec, perms)), path)
    result = run_job(model_curve_job(str(small_zoo.path_of(name)), str(path), "digits", grid=4,
                                     align="activation"))
    assert result.aligned.barrier < 1e-4
    seeds = run_job(model_curve_job(_path(small_zoo, "mlp-w32-s0"),
                                    _path(small_zoo, "mlp-w32-s1"), "digits", grid=6,
                                    align="activation"))
    assert seeds.aligned.mean_loss < seeds.naive.mean_loss


@pytest.mark.parametrize("form", ["pt2", "state-dict"])
def test_activation_matching_works_on_every_file_form(small_zoo, tmp_path, monkeypatch, form):
    """--align activation reads layer outputs from the program's graph, so a .pt2 (no
    submodules to hook) and a plain state dict align like a mal safetensors file."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # user_arch stands for user code
    arch = None
    if form == "pt2":
        model = load_model(small_zoo.path_of("mlp-w32-s0"))
    else:
        arch = "user_arch:make_digits_mlp"
        torch.manual_seed(0)
        path = tmp_path / "random.pt"
        import user_arch
        torch.save(user_arch.make_digits_mlp().state_dict(), path)
        model = load_model(path, arch)
    spec = discover_spec(model)
    gen = torch.Generator().manual_seed(5)
    perms = {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}
    permuted = model.with_state(permute_state(model.state(), spec, perms))
    paths = []
    for name, m in (("base", model), ("target", permuted)):
        if form == "pt2":
            path = tmp_path / f"{name}.pt2"
            torch.export.save(torch.export.export(m.module, (m.example_input(4),)), path)
        else:
            path = tmp_path / f"{name}.pt"
            torch.save(m.module.state_dict(), path)
        paths.append(str(path))
    result = run_job(model_curve_job(*paths, "digits", grid=4, align="activation", arch=arch))
    assert result.aligned.barrier < 1e-4
    # the permuted copy was recovered unit for unit: the aligned curve is flat
    assert max(result.aligned.loss) - min(result.aligned.loss) < 1e-5


def test_naive_and_aligned_points_arrive_together_lambda_by_lambda(small_zoo):
    """The live plot grows both curves at once: the job yields naive then aligned at each lambda,
    never one whole curve before the other; the points are those of the returned curves."""
    events = []
    result = run_job(model_curve_job(_path(small_zoo, "mlp-w32-s0"), _path(small_zoo, "mlp-w32-s1"),
                                     "digits", grid=4), events.append)
    points = [e.payload for e in events if e.stage == "curve"]
    assert [(p.series, p.index) for p in points] == [
        (name, i) for i in range(4) for name in ("naive", "aligned")]
    for p in points:
        curve = result.naive if p.series == "naive" else result.aligned
        assert p.loss == curve.loss[p.index] and p.accuracy == curve.accuracy[p.index]


def test_a_plan_curve_evaluates_on_the_bases_own_tensors_outside_its_step(small_zoo,
                                                                          monkeypatch):
    """A curve of one layer of a 7B model must cost that layer: the points used to be evaluated
    on a deep copy of the whole base module (a second 13.5 GB)."""
    from mal_desktop.core.evaluate import curves
    from mal_desktop.core.jobs import plan_curve_job
    from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep

    base_path = _path(small_zoo, "mlp-w32-s0")
    base = load_model(base_path)
    own = {k: v.data_ptr() for k, v in base.module.state_dict().items()}
    seen: list[dict[str, int]] = []
    evaluate = curves.evaluate_model

    def recording(model, *args, **kwargs):
        seen.append({k: v.data_ptr() for k, v in model.module.state_dict().items()})
        return evaluate(model, *args, **kwargs)

    monkeypatch.setattr(curves, "evaluate_model", recording)
    plan = AssemblyPlan(base=base_path, zoo={"d": _path(small_zoo, "mlp-w32-s1")},
                        steps=[AssemblyStep("d", "layers.1", "layers.1", 0.5, "chain")])
    curve = run_job(plan_curve_job(plan, 0, "digits", grid=3, models={base_path: base}))
    assert len(seen) == 6
    assert curve.naive.loss[0] == evaluate_model(base, load_dataset("digits")).loss
    merged = {k for k in own if k.startswith("layers.1.")}
    assert merged and len(merged) < len(own)
    for ptrs in seen:
        assert {k for k in own if ptrs[k] == own[k]} >= set(own) - merged
    # at lambda 0 the probe is the base itself, tensor for tensor
    assert seen[0] == own
