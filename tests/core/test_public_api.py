"""The plug-in API of README "Extending", used only through the package names: each kind of
plug-in is registered from ``mal_desktop.core.<package>`` and then does its job end to end."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mal_desktop.core.arch import build_model, full_config, register_family
from mal_desktop.core.errors import PlanError
from mal_desktop.core.evaluate import (Dataset, PipelineSpec, SampleScores, load_dataset,
                                       log_softmax, register_dataset, register_metric,
                                       register_stage, run_pipeline, samples_of)
from mal_desktop.core.io.files import load_model, save_model
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.jobs import assemble_job
from mal_desktop.core.merge import Param, register_method
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.core.progress import run_job
from mal_desktop.core.toolkit import FileRef, eval_matrix_job, register_model_kind

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_registries():
    """Registrations made here must not leak into other tests (registries are module globals)."""
    from mal_desktop.core.arch import families
    from mal_desktop.core.evaluate import datasets, metric_registry, pipeline
    from mal_desktop.core.merge import methods
    from mal_desktop.core.toolkit import model_refs

    registries = [families.FAMILIES, datasets.DATASETS, datasets._CACHE, metric_registry.METRICS,
                  methods.MERGE_METHODS, model_refs.MODEL_KINDS, *pipeline.STAGES.values()]
    saved = [dict(r) for r in registries]
    yield
    for registry, before in zip(registries, saved):
        registry.clear()
        registry.update(before)


class TinyNet(nn.Module):
    """A plug-in architecture: flatten, one hidden layer, a head."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.fc = nn.Linear(math.prod(config["input_shape"]), config["hidden"])
        self.head = nn.Linear(config["hidden"], config["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x.flatten(1))))


def _register_toy_dataset() -> None:
    @register_dataset("api-toy", "30 random 1x4x4 samples, 3 classes")
    def _toy() -> Dataset:
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.normal(size=(30, 1, 4, 4)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 3, size=30).astype(np.int64))
        return Dataset("api-toy", x, y, x, y, 3, "toy", ("a", "b", "c"))


def _register_tiny_family() -> None:
    register_family("api-tiny", {"hidden": 6}, "one hidden layer")(TinyNet)


def _save_tiny(path: Path, seed: int) -> Path:
    config = full_config("api-tiny", {"input_shape": [1, 4, 4], "num_classes": 3})
    torch.manual_seed(seed)
    module = build_model("api-tiny", config)
    arch = {"kind": "family", "family": "api-tiny", "config": config}
    return save_model(LoadedModel(module, arch, (1, 4, 4), 3, metadata={"name": path.stem}),
                      path)


def test_a_metric_dataset_and_family_from_the_packages_meet_in_an_eval_matrix(tmp_path) -> None:
    _register_toy_dataset()
    _register_tiny_family()

    @register_metric("api_error_rate", "sample", "1 - accuracy", higher_is_better=False)
    def _error_rate(scores: SampleScores) -> float:
        return 1.0 - float(scores.correct.mean())

    model_path = _save_tiny(tmp_path / "tiny.safetensors", 0)  # rebuilt through the family
    result = run_job(eval_matrix_job([str(model_path)], ["api-toy"],
                                     metrics=["accuracy", "api_error_rate"],
                                     cache_dir=tmp_path / "cache"))
    cell = result.cells[0]
    assert cell.error is None and cell.n == 30
    assert cell.metrics["api_error_rate"] == pytest.approx(1.0 - cell.metrics["accuracy"])
    assert set(cell.per_category) == {"a", "b", "c"}  # the dataset's class names as categories
    assert "api_error_rate" in cell.per_category["a"]


def test_a_stage_from_the_package_replaces_the_softmax(tmp_path) -> None:
    _register_toy_dataset()
    _register_tiny_family()

    @register_stage("postprocess", "api-temperature-4", "softmax of logits / 4")
    def _t4(logits: np.ndarray) -> np.ndarray:
        return log_softmax(np.asarray(logits) / 4.0)

    model = load_model(_save_tiny(tmp_path / "tiny.safetensors", 1))
    samples = samples_of(load_dataset("api-toy"))
    result = run_pipeline(model, samples, ["loss"], PipelineSpec(postprocess="api-temperature-4"))
    with torch.no_grad():
        logits = model.module(samples.inputs).double() / 4.0
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(30), samples.labels].numpy()
    np.testing.assert_allclose(result.scores.loss, expected, rtol=1e-5)
    assert result.metrics["loss"] == pytest.approx(float(expected.mean()), rel=1e-5)


def test_a_model_kind_from_the_package_resolves_and_evaluates(tmp_path) -> None:
    _register_toy_dataset()
    _register_tiny_family()
    model_path = _save_tiny(tmp_path / "tiny.safetensors", 2)

    @dataclass
    class ShelfRef(FileRef):
        kind = "shelf"

    def shelf(text: str, zoo_dir, arch) -> ShelfRef | None:
        """``shelf:NAME``: a model kept on a (here: temporary) shelf folder."""
        if not text.startswith("shelf:"):
            return None
        name = text.removeprefix("shelf:")
        return ShelfRef(text, name, path=tmp_path / f"{name}.safetensors")

    register_model_kind("shelf", shelf)
    result = run_job(eval_matrix_job(["shelf:tiny"], ["api-toy"], metrics=["accuracy"],
                                    cache_dir=tmp_path / "cache"))
    assert result.models[0]["kind"] == "shelf" and result.cells[0].error is None
    # the same file named directly is the same model: its cell comes from the cache
    again = run_job(eval_matrix_job([str(model_path)], ["api-toy"], metrics=["accuracy"],
                                   cache_dir=tmp_path / "cache"))
    assert again.cached == 1 and again.cells[0].metrics == result.cells[0].metrics


def test_a_merge_method_from_the_package_runs_in_an_assembly(tmp_path) -> None:
    _register_tiny_family()

    @register_method("api_scaled_delta", "base + lambda * scale * (target - base)",
                     (Param("scale", 1.0, 0.0, 2.0, "multiplier of the difference"),))
    def _scaled(base: torch.Tensor, target: torch.Tensor, lam: float, seed: int,
                scale: float) -> torch.Tensor:
        return base + lam * scale * (target - base)

    base_path = _save_tiny(tmp_path / "base.safetensors", 3)
    donor_path = _save_tiny(tmp_path / "donor.safetensors", 4)
    step = AssemblyStep("donor", "fc", "fc", 0.5, "none", method="api_scaled_delta",
                        params=(("scale", 2.0),))
    plan = AssemblyPlan(base=str(base_path), zoo={"donor": str(donor_path)}, steps=[step])
    merged = run_job(assemble_job(plan)).model.state()
    base, donor = load_model(base_path).state(), load_model(donor_path).state()
    # lambda 0.5 with scale 2 takes the donor's layer whole; the head stays the base's
    for key in ("fc.weight", "fc.bias"):
        torch.testing.assert_close(merged[key], donor[key])
    for key in ("head.weight", "head.bias"):
        assert torch.equal(merged[key], base[key])
    # the parameter schema is enforced (when the step is made or when it runs)
    with pytest.raises(PlanError, match="scale must be in"):
        bad = AssemblyStep("donor", "fc", "fc", 0.5, "none", method="api_scaled_delta",
                           params=(("scale", 3.0),))
        run_job(assemble_job(AssemblyPlan(base=str(base_path), zoo={"donor": str(donor_path)},
                                          steps=[bad])))


def test_importing_a_light_module_does_not_load_the_plugin_api() -> None:
    # The packages serve their public names lazily: the GUI imports merge.plan at start-up,
    # which must not bring torch in through merge.methods.
    code = ("import sys, mal_desktop.core.merge.plan, mal_desktop.core.evaluate.metric_registry\n"
            "print('torch' in sys.modules)\n"
            "from mal_desktop.core.merge import register_method\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
