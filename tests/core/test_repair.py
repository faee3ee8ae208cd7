"""REPAIR-style BatchNorm reset: statistics match the data, end points stay the models' losses."""

import pytest
import torch

from mal_desktop.core.evaluate.datasets import load_dataset
from mal_desktop.core.evaluate.evaluator import evaluate_model, fit_inputs
from mal_desktop.core.evaluate.repair import reset_batchnorm_stats
from mal_desktop.core.io.files import load_model
from mal_desktop.core.jobs import ModelCache, curve_series, model_curve_job
from mal_desktop.core.progress import run_job


def test_reset_gives_the_empirical_statistics_of_the_data(small_zoo):
    model = load_model(small_zoo.path_of("cnn-w8-s0"))
    module = model.module
    x = load_dataset("digits").x_train[:300]
    first_bn = module.features[0][1]
    with torch.no_grad():
        pre = module.features[0][0](x)  # the conv output the first BatchNorm normalises
    assert reset_batchnorm_stats(module, x, batch_size=300) == 2
    assert torch.allclose(first_bn.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(first_bn.running_var, pre.var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    assert not module.training


def test_no_batchnorm_means_nothing_to_repair(small_zoo):
    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    before = {k: v.clone() for k, v in model.state().items()}
    assert reset_batchnorm_stats(model.module, torch.zeros(4, 1, 8, 8)) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state().items())


@pytest.fixture(scope="module")
def cnn_seed1(small_zoo, tmp_path_factory) -> str:
    """A second CNN like the zoo's cnn-w8-s0 (same config and recipe), trained from seed 1."""
    from mal_desktop.core.zoo.build import ZooEntry, build_zoo_job

    config = load_model(small_zoo.path_of("cnn-w8-s0")).arch["config"]
    entry = ZooEntry("cnn-w8-s1", "cnn", dict(config), "digits", seed=1, epochs=4)
    zoo = run_job(build_zoo_job(tmp_path_factory.mktemp("cnn_s1"), [entry], None))
    return str(zoo.path_of("cnn-w8-s1"))


def _batchnorm_stats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}


def test_repaired_curve_re_estimates_interior_statistics_and_keeps_its_end_points(small_zoo,
                                                                                   cnn_seed1):
    base, target = str(small_zoo.path_of("cnn-w8-s0")), cnn_seed1
    plain = run_job(model_curve_job(base, target, "digits", grid=3))
    repaired = run_job(model_curve_job(base, target, "digits", grid=3, repair=True))
    assert repaired.repair and not plain.repair
    data = load_dataset("digits")
    base_model, target_model = load_model(base), load_model(target)
    base_loss = evaluate_model(base_model, data).loss
    target_loss = evaluate_model(target_model, data).loss
    assert base_loss != target_loss  # two different models, or the end points prove nothing
    # End points: the models' own losses (naive: exactly; aligned: the target with permuted
    # hidden units, the same function), repaired or not.
    for curve in (plain, repaired):
        assert curve.naive.loss[0] == curve.aligned.loss[0] == base_loss
        assert curve.naive.loss[-1] == target_loss
        assert curve.aligned.loss[-1] == pytest.approx(target_loss, abs=1e-5)
    # Interior: interpolated statistics no longer describe the merged network; re-estimated
    # ones lower the loss (REPAIR's purpose) on both series.
    assert repaired.naive.loss[1] < plain.naive.loss[1]
    assert repaired.aligned.loss[1] < plain.aligned.loss[1]
    # The repaired point is the merged model with its statistics re-estimated on the training
    # inputs, and those statistics differ from the interpolated ones.
    series = curve_series(ModelCache(), base, target)
    for name, state_at in series.as_dict().items():
        merged = base_model.with_state(state_at(0.5))
        interpolated = _batchnorm_stats(merged.module)
        x_train = fit_inputs(merged, data.x_train, data.name)
        assert reset_batchnorm_stats(merged.module, x_train) == 2
        fresh = _batchnorm_stats(merged.module)
        assert interpolated.keys() == fresh.keys() and len(fresh) == 4
        for key in fresh:
            assert not torch.allclose(fresh[key], interpolated[key], rtol=1e-3, atol=1e-4), key
        assert getattr(repaired, name).loss[1] == pytest.approx(
            evaluate_model(merged, data).loss, rel=1e-6), name


def test_repair_is_reported_only_when_something_was_repaired(small_zoo):
    mlp = str(small_zoo.path_of("mlp-w32-s0"))  # no BatchNorm: nothing to re-estimate
    assert not run_job(model_curve_job(mlp, mlp, "digits", grid=3, repair=True)).repair


def test_a_repaired_curve_leaves_the_base_model_untouched(small_zoo, cnn_seed1):
    """The probe of a point shares the base's tensors; a repaired point re-estimates statistics
    in place, so it must get its own, or the base (shared by the app's later curves and merges)
    would carry the last point's statistics."""
    from mal_desktop.core.jobs import ModelCache

    base_path = str(small_zoo.path_of("cnn-w8-s0"))
    cache = ModelCache()
    base = cache.model(base_path)
    before = {k: v.clone() for k, v in base.state().items()}
    run_job(model_curve_job(base_path, cnn_seed1, "digits", grid=3, repair=True, cache=cache))
    after = base.state()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
