"""Models returning several outputs: the logits are a chosen output (`--output N`, the plan's
"base_output" / "zoo_outputs"), the first by default with a note on stderr (issue 8)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mal_desktop.cli import main
from mal_desktop.core.errors import ModelFileError, PlanError
from mal_desktop.core.evaluate.datasets import load_dataset
from mal_desktop.core.io.files import load_model
from mal_desktop.core.jobs import assemble_job, evaluate_job
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep, load_plan
from mal_desktop.core.progress import run_job

sys.path.insert(0, str(Path(__file__).parent))  # tests/core is not a package
import idiom_modules as im  # noqa: E402

ARCH = "user_arch:make_logits_and_features"


@pytest.fixture
def two_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # user_arch stands for user code
    import user_arch

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"m{seed}.pt"
        torch.save(user_arch.make_logits_and_features().state_dict(), path)
        paths.append(path)
    return paths[0], paths[1]


def _mal(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_first_output_is_the_default_and_a_note_names_it(two_models, capsys) -> None:
    a, _ = two_models
    code, out, err = _mal(capsys, "evaluate", str(a), "--arch", ARCH, "--data", "digits",
                          "--json", "--quiet")
    assert code == 0, err
    assert "returns 2 outputs; output 0" in err and "--output N" in err
    obj = json.loads(out)
    assert (obj["outputs"], obj["output_index"]) == (2, 0)
    model = load_model(a, ARCH)
    data = load_dataset("digits")
    with torch.no_grad():
        logits, _ = model.module(data.x_test.reshape(-1, 1, 8, 8).float())
    assert obj["loss"] == pytest.approx(float(F.cross_entropy(logits, data.y_test.long())),
                                        rel=1e-5)
    # chosen explicitly: no note
    code, out, err = _mal(capsys, "evaluate", str(a), "--arch", ARCH, "--data", "digits",
                          "--output", "0", "--quiet")
    assert code == 0 and "note" not in err


def test_inspect_with_a_chosen_output(two_models, capsys) -> None:
    a, _ = two_models
    code, out, err = _mal(capsys, "inspect", str(a), "--arch", ARCH, "--output", "1", "--json",
                          "--self-test")
    assert code == 0, err
    obj = json.loads(out)
    assert (obj["outputs"], obj["output_index"], obj["num_classes"]) == (2, 1, 12)
    code, out, err = _mal(capsys, "inspect", str(a), "--arch", ARCH, "--json")
    obj = json.loads(out)
    assert obj["num_classes"] == 10 and "output 0" in err
    # the features output pins its space, and says why; the logits stay the class output
    model = load_model(a, ARCH)
    from mal_desktop.core.graph.discover import discover_spec

    spec = discover_spec(model)
    reasons = {s.id: s.reason for s in spec.spaces.values() if s.fixed}
    assert reasons[spec.axes["head.weight"][0].space] == "class output"
    assert "model output 1" in reasons[spec.axes["fc2.weight"][0].space]
    assert not spec.spaces[spec.axes["fc1.weight"][0].space].fixed
    code, _, err = _mal(capsys, "inspect", str(a), "--arch", ARCH, "--output", "2")
    assert code == 1 and "returns 2 outputs; there is no output 2" in err


def test_curve_uses_the_chosen_output_of_both_models(two_models, capsys) -> None:
    a, b = two_models
    code, out, err = _mal(capsys, "curve", "--base", str(a), "--target", str(b), "--arch", ARCH,
                          "--data", "digits", "--grid", "3", "--json", "--quiet")
    assert code == 0, err
    assert err.count("returns 2 outputs") == 2  # one note per model
    obj = json.loads(out)
    assert obj["output_index"] == 0
    base_loss = run_job(evaluate_job(load_model(a, ARCH), "digits")).loss
    assert obj["naive"]["loss"][0] == pytest.approx(base_loss, rel=1e-6)


def test_the_plan_stores_the_choice_and_stays_backward_compatible(two_models, tmp_path) -> None:
    a, b = two_models
    raw = {"base": str(a), "zoo": {"other": str(b)},
           "steps": [{"source": "other", "source_layer": "fc1", "base_layer": "fc1",
                      "lambda": 0.5}]}
    plain = AssemblyPlan.from_json(raw)
    assert plain.base_output is None and plain.zoo_outputs == {}
    assert "base_output" not in plain.to_json() and "zoo_outputs" not in plain.to_json()
    chosen = AssemblyPlan.from_json({**raw, "base_output": 0, "zoo_outputs": {"other": 0}})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(chosen.to_json()))
    again = load_plan(path)
    assert (again.base_output, again.zoo_outputs) == (0, {"other": 0})
    assert again.outputs_by_path() == {str(a.resolve()): 0, str(b.resolve()): 0}
    for bad, message in (({"base_output": -1}, "'base_output' must be a whole number"),
                         ({"base_output": True}, "'base_output' must be a whole number"),
                         ({"zoo_outputs": {"nobody": 0}}, "names 'nobody'"),
                         ({"zoo_outputs": {"other": "1"}}, "'zoo_outputs' of 'other'"),
                         ({"zoo_outputs": [0]}, "must map zoo model names")):
        with pytest.raises(PlanError, match=message):
            AssemblyPlan.from_json({**raw, **bad})


def test_assembly_loads_each_model_with_its_chosen_output(two_models) -> None:
    a, b = two_models
    step = AssemblyStep("other", "fc1", "fc1", 0.5)
    plan = AssemblyPlan(str(a), {"other": str(b)}, None, [step], base_output=1,
                        zoo_outputs={"other": 0})
    result = run_job(assemble_job(plan, arch=ARCH))
    assert result.model.output_index == 1 and result.model.num_classes == 12
    bad = AssemblyPlan(str(a), {"other": str(b)}, None, [step], zoo_outputs={"other": 5})
    with pytest.raises(ModelFileError, match="no output 5"):
        run_job(assemble_job(bad, arch=ARCH))


# ----- .pt2 programs returning several outputs (read by our own reader) ----------------------

@pytest.fixture
def two_programs(tmp_path: Path) -> tuple[tuple[Path, torch.nn.Module], ...]:
    """Two seeds of a two-output module exported to .pt2 (dynamic batch), with the modules."""
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        module = im.TwoOutputs().eval()
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(module, (torch.randn(4, 1, 8, 8),),
                                      dynamic_shapes=({0: batch},))
        path = tmp_path / f"p{seed}.pt2"
        torch.export.save(program, str(path))
        out.append((path, module))
    return tuple(out)


def _digits_loss(module: torch.nn.Module, output: int) -> float:
    data = load_dataset("digits")
    with torch.no_grad():
        chosen = module(data.x_test.reshape(-1, 1, 8, 8).float())[output]
    return float(F.cross_entropy(chosen, data.y_test.long()))


def test_a_program_with_two_outputs_loads_and_returns_both(two_programs) -> None:
    (path, module), _ = two_programs
    model = load_model(path)
    assert (model.outputs, model.output_index, model.num_classes) == (2, 0, 10)
    assert "returns 2 outputs; output 0" in model.output_note()
    chosen = load_model(path, output=1)
    assert (chosen.outputs, chosen.output_index, chosen.num_classes) == (2, 1, 12)
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        got, want = chosen.module(x), module(x)
    assert isinstance(got, tuple) and len(got) == 2  # like the original
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    with pytest.raises(ModelFileError, match="returns 2 outputs; there is no output 2"):
        load_model(path, output=2)


def test_evaluate_a_program_with_a_chosen_output(two_programs, capsys) -> None:
    (path, module), _ = two_programs
    code, out, err = _mal(capsys, "evaluate", str(path), "--data", "digits", "--output", "1",
                          "--json", "--quiet")
    assert code == 0, err
    obj = json.loads(out)
    assert (obj["outputs"], obj["output_index"]) == (2, 1)
    assert obj["loss"] == pytest.approx(_digits_loss(module, 1), rel=1e-5)
    assert obj["loss"] != pytest.approx(_digits_loss(module, 0), rel=1e-3)
    code, out, err = _mal(capsys, "evaluate", str(path), "--data", "digits", "--json", "--quiet")
    assert code == 0 and "returns 2 outputs; output 0" in err
    assert json.loads(out)["loss"] == pytest.approx(_digits_loss(module, 0), rel=1e-5)
    code, _, err = _mal(capsys, "evaluate", str(path), "--data", "digits", "--output", "2")
    assert code == 1 and "there is no output 2" in err


def test_inspect_a_program_with_a_chosen_output(two_programs, capsys) -> None:
    (path, _), _ = two_programs
    code, out, err = _mal(capsys, "inspect", str(path), "--output", "1", "--json", "--self-test")
    assert code == 0, err
    obj = json.loads(out)
    assert (obj["outputs"], obj["output_index"], obj["num_classes"]) == (2, 1, 12)
    assert obj["self_test"]["passed"] and obj["self_test"]["free_spaces"] > 0
    spec = load_model(path, output=1)
    from mal_desktop.core.graph.discover import discover_spec

    spec = discover_spec(spec, cache=False)
    reasons = {s.id: s.reason for s in spec.spaces.values() if s.fixed}
    assert reasons[spec.axes["fc2.weight"][0].space] == "class output"
    assert "model output 0" in reasons[spec.axes["head.weight"][0].space]


def test_curve_and_assembly_of_programs_use_the_chosen_output(two_programs, capsys,
                                                              tmp_path) -> None:
    (a, module_a), (b, _) = two_programs
    code, out, err = _mal(capsys, "curve", "--base", str(a), "--target", str(b), "--data",
                          "digits", "--grid", "3", "--output", "1", "--json", "--quiet")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["output_index"] == 1
    assert obj["naive"]["loss"][0] == pytest.approx(_digits_loss(module_a, 1), rel=1e-5)
    step = AssemblyStep("other", "fc1", "fc1", 0.5)
    plan = AssemblyPlan(str(a), {"other": str(b)}, None, [step], base_output=1,
                        zoo_outputs={"other": 1})
    out_path = tmp_path / "merged.safetensors"
    result = run_job(assemble_job(plan, out=out_path))
    assert (result.model.output_index, result.model.num_classes) == (1, 12)
    # the merged file remembers which output is the logits
    merged = load_model(out_path)
    assert (merged.outputs, merged.output_index, merged.num_classes) == (2, 1, 12)
    assert load_model(out_path, output=0).num_classes == 10
    with pytest.raises(ModelFileError, match="no output 5"):
        run_job(assemble_job(AssemblyPlan(str(a), {"other": str(b)}, None, [step],
                                          base_output=5)))


def test_the_evaluation_matrix_scores_the_chosen_output(two_programs, tmp_path) -> None:
    """A file reference with an output choice (what the app's Evaluate panel passes) is scored
    on that output and cached apart from the same file's first output."""
    from dataclasses import replace

    from mal_desktop.core.toolkit.matrix import eval_matrix_job
    from mal_desktop.core.toolkit.model_refs import parse_model_ref

    (path, module), _ = two_programs
    first = parse_model_ref(str(path))
    chosen = replace(first, text=f"{path}#1", output=1)
    assert chosen.content_hash() != first.content_hash()
    result = run_job(eval_matrix_job([first, chosen], ["digits"], ["loss"], tmp_path / "cache"))
    losses = [cell.metrics["loss"] for cell in result.cells]
    assert losses == [pytest.approx(_digits_loss(module, 0), rel=1e-5),
                      pytest.approx(_digits_loss(module, 1), rel=1e-5)]


class _LogitsAndProbabilities(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(torch.relu(self.fc1(torch.flatten(x, 1))))
        return logits, torch.softmax(logits, dim=1)


def test_a_chosen_output_of_probabilities_still_warns(tmp_path) -> None:
    from mal_desktop.core.errors import MalWarning

    torch.manual_seed(0)
    module = _LogitsAndProbabilities().eval()
    path = tmp_path / "probs.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(4, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("b", max=4096)},)),
                      str(path))
    run_job(evaluate_job(load_model(path), "digits"))  # the logits: no warning (an error here)
    with pytest.warns(MalWarning, match="look like probabilities"):
        run_job(evaluate_job(load_model(path, output=1), "digits"))
