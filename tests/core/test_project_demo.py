"""The demo zoo's choices and the merged model of a plan (core/project/demo.py, merged.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mal_desktop.core.errors import MalError
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.core.project.demo import (DEMO_BASE, DEMO_ZOO, demo_zoo_entries, demo_zoo_ready,
                                           pick_demo_models, suggest_first_step, weight_layers)
from mal_desktop.core.project.merged import missing_model_files, used_zoo
from mal_desktop.core.zoo.build import ZooIndex, ZooModelInfo


def info(name: str, family: str = "mlp", dataset: str = "digits",
         config: dict | None = None) -> ZooModelInfo:
    return ZooModelInfo(name, f"{name}.safetensors", family, config or {"widths": [8]}, dataset,
                        0, 1, 0.9, 0.3, "hash")


def index(tmp_path: Path, *entries: ZooModelInfo, files: bool = True) -> ZooIndex:
    if files:
        for e in entries:
            (tmp_path / e.path).write_bytes(b"x")
    return ZooIndex(tuple(entries), tmp_path)


def test_demo_models_are_picked_when_listed(tmp_path: Path) -> None:
    zoo = index(tmp_path, info("other"), info(DEMO_BASE), *(info(n) for n in DEMO_ZOO))
    base, picked = pick_demo_models(zoo)
    assert base.name == DEMO_BASE and [z.name for z in picked] == list(DEMO_ZOO)
    assert demo_zoo_ready(zoo)
    (tmp_path / f"{DEMO_ZOO[0]}.safetensors").unlink()
    assert not demo_zoo_ready(zoo)  # listed but the file is gone


def test_other_zoos_offer_one_model_of_each_kind(tmp_path: Path) -> None:
    zoo = index(tmp_path, info("b"), info("cnn", "cnn", config={"channels": [4]}),
                info("wide", config={"widths": [16]}), info("twin"),
                info("perm", dataset="digits-permuted", config={"widths": [16]}),
                info("mlp2", config={"widths": [32]}))
    base, picked = pick_demo_models(zoo)
    assert base.name == "b" and not demo_zoo_ready(zoo)
    names = [z.name for z in picked]
    assert len(names) == 4 and names[0] == "twin"  # same architecture, another seed first
    assert "perm" in names and "cnn" in names  # other data and another family offered


def test_a_zoo_without_a_digits_mlp_is_refused(tmp_path: Path) -> None:
    zoo = index(tmp_path, info("c", "cnn"), info("m", dataset="digits-rot90"))
    with pytest.raises(MalError, match="no MLP trained on digits"):
        pick_demo_models(zoo)


def test_demo_build_keeps_models_already_in_the_zoo() -> None:
    names = {e.name for e in demo_zoo_entries()}
    assert names == {DEMO_BASE, *DEMO_ZOO}
    assert "mlp-w32-s0" in {e.name for e in demo_zoo_entries(["mlp-w32-s0"])}


def _tree(widths: list[int], classes: int = 10):
    import torch

    from mal_desktop.core.arch.families import build_model, full_config
    from mal_desktop.core.graph.tree import build_layer_tree
    from mal_desktop.core.io.model import LoadedModel

    config = full_config("mlp", {"widths": widths, "num_classes": classes})
    torch.manual_seed(0)
    model = LoadedModel(build_model("mlp", config), {"kind": "family", "family": "mlp",
                                                     "config": config},
                        tuple(config["input_shape"]), classes)
    return build_layer_tree(model)


def test_first_step_is_a_hidden_layer_that_fits() -> None:
    base, twin, small = _tree([16, 16]), _tree([16, 16]), _tree([8, 8], classes=5)
    layers = weight_layers(base)
    assert layers == ["layers.0", "layers.1", "head"]
    step = suggest_first_step(base, {"small": small, "twin": twin})
    # "small" comes first but has 5 classes: its hidden layers still fit (zero-padded).
    assert step == AssemblyStep("small", "layers.1", "layers.1", lam=0.5)
    asked: list[tuple[str, str, str]] = []

    def only_twin(name: str, layer: str, base_layer: str) -> bool:
        asked.append((name, layer, base_layer))
        return name == "twin"
    step = suggest_first_step(base, {"small": small, "twin": twin}, only_twin)
    assert step == AssemblyStep("twin", "layers.1", "layers.1", lam=0.5)
    assert asked[0] == ("small", "layers.1", "layers.1")  # hidden layers are tried first
    assert suggest_first_step(base, {"twin": twin}, lambda *_: False) is None
    assert suggest_first_step(None, {"twin": twin}) is None


def test_used_zoo_and_missing_files(tmp_path: Path) -> None:
    for name in ("base", "a", "b"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    plan = AssemblyPlan(str(tmp_path / "base.safetensors"),
                        {"a": str(tmp_path / "a.safetensors"), "b": str(tmp_path / "b.safetensors"),
                         "mem": ""}, "digits", [AssemblyStep("a", "fc1", "fc1")])
    used = used_zoo(plan)
    assert used.zoo == {"a": str(tmp_path / "a.safetensors")} and used.steps == plan.steps
    assert used.data is None and used.base == plan.base
    assert missing_model_files(plan) == []  # the model only in memory is not used
    plan.steps.append(AssemblyStep("mem", "fc2", "fc2"))
    assert missing_model_files(plan) == ["(a model only in memory)"]
    (tmp_path / "base.safetensors").unlink()
    assert missing_model_files(plan)[0] == str(tmp_path / "base.safetensors")
    (tmp_path / "folder").mkdir()  # a Hugging Face model folder is on disk too
    plan.base, plan.steps = str(tmp_path / "folder"), plan.steps[:1]
    assert missing_model_files(plan) == []


def test_language_demo_opens_the_code_model_as_base_and_the_rest_as_zoo(tmp_path: Path) -> None:
    from mal_desktop.core.project.demo import LM_DEMO_BASE, lm_demo_ready, pick_lm_demo_models

    def lm(name: str, dataset: str = "python-code") -> ZooModelInfo:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        return ZooModelInfo(name, name, "llama", {}, dataset, 0, 1, 0.3, 3.4, "hash")

    docs, base, other = lm("llama-w128-s1-docstrings", "python-docstrings"), lm(LM_DEMO_BASE), \
        lm("llama-w64-s0-code")
    zoo = ZooIndex((docs, other, base), tmp_path)
    picked, rest = pick_lm_demo_models(zoo)
    assert picked.name == LM_DEMO_BASE and [z.name for z in rest] == [docs.name, other.name]
    # without the demo's base: the first model trained on code
    assert pick_lm_demo_models(ZooIndex((docs, other), tmp_path))[0].name == other.name
    names = [docs.name, base.name, other.name]
    assert lm_demo_ready(zoo, names)
    assert not lm_demo_ready(ZooIndex((docs, base), tmp_path), names)  # not listed
    (tmp_path / other.name / "config.json").unlink()
    assert not lm_demo_ready(zoo, names)  # listed, but its folder is not whole
    with pytest.raises(MalError, match="lists no model"):
        pick_lm_demo_models(ZooIndex((), tmp_path))
