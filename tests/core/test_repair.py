"""REPAIR-style BatchNorm reset: statistics match the data, end points stay the models' losses."""

import torch

from mal_desktop.core.evaluate.datasets import load_dataset
from mal_desktop.core.evaluate.repair import reset_batchnorm_stats
from mal_desktop.core.io.files import load_model
from mal_desktop.core.jobs import model_curve_job
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


def test_repaired_curve_keeps_its_end_points(small_zoo):
    base, target = str(small_zoo.path_of("cnn-w8-s0")), str(small_zoo.path_of("cnn-w8-s0"))
    plain = run_job(model_curve_job(base, target, "digits", grid=3))
    repaired = run_job(model_curve_job(base, target, "digits", grid=3, repair=True))
    assert repaired.repair and not plain.repair
    assert repaired.naive.loss[0] == plain.naive.loss[0]
    assert repaired.naive.loss[-1] == plain.naive.loss[-1]


def test_repair_is_reported_only_when_something_was_repaired(small_zoo):
    mlp = str(small_zoo.path_of("mlp-w32-s0"))  # no BatchNorm: nothing to re-estimate
    assert not run_job(model_curve_job(mlp, mlp, "digits", grid=3, repair=True)).repair
