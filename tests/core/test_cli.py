"""The `mal` command-line contract: --json prints one object, errors are one line, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mal_desktop.cli import main
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def mal(capsys):
    """Run ``mal ARGS`` in this process (the same main() the console script calls) and capture
    what it prints; one subprocess test below checks the real entry point."""

    def run(*args: str, check: bool = True) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        ran = Ran(code, out, err)
        if check:
            assert code == 0, err
        return ran

    return run


def test_inspect_json(mal, small_zoo):
    out = mal("inspect", str(small_zoo.path_of("cnn-w8-s0")), "--json", "--self-test")
    obj = json.loads(out.stdout)
    assert obj["form"] == "mal-safetensors" and obj["num_classes"] == 10
    assert obj["self_test"]["passed"] is True
    assert any(s["fixed"] for s in obj["spaces"]) and any(not s["fixed"] for s in obj["spaces"])


def test_inspect_text_shows_each_layers_shape_and_how_its_axes_hold_units(mal, small_zoo):
    """The text names each weight's shape, and where an axis is not one entry per unit (a
    linear layer after a flatten reads each channel at every position) says so: the space's
    size then differs from the weight's."""
    lines = mal("inspect", str(small_zoo.path_of("cnn-w8-s0"))).stdout.splitlines()
    conv = next(line for line in lines if line.strip().startswith("features.0.0"))
    assert "8x1x3x3" in conv and "[fixed]" in conv  # reads the network input
    fc = next(line for line in lines if line.strip().startswith("fc "))
    assert "entries each" in fc


def test_curve_json_has_the_documented_keys(mal, small_zoo):
    out = mal("curve", "--base", str(small_zoo.path_of("mlp-w32-s0")), "--target",
              str(small_zoo.path_of("mlp-w32-s1")), "--data", "digits", "--grid", "5", "--json")
    obj = json.loads(out.stdout)
    assert obj["lambdas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for series in ("naive", "aligned"):
        assert set(obj[series]) >= {"loss", "accuracy", "barrier", "mean_loss", "threshold"}
        assert len(obj[series]["loss"]) == 5
    assert out.stderr  # progress went to stderr, not stdout


def test_curve_says_what_repair_did_and_defines_lambda_star(mal, small_zoo):
    """--repair on a model without BatchNorm (every language model) printed the usual table and
    nothing else, though its help promises a report; lambda* was never defined."""
    for name, words in (("mlp-w32-s0", "repair: nothing to re-estimate (mlp-w32-s0.safetensors "
                                       "has no BatchNorm statistics)"),
                        ("cnn-w8-s0", "repair: BatchNorm statistics re-estimated at every "
                                      "interior lambda")):
        path = str(small_zoo.path_of(name))
        out = mal("curve", "--base", path, "--target", path, "--data", "digits", "--grid", "3",
                  "--repair")
        assert out.stdout.rstrip().endswith(words), out.stdout
        assert "lambda*: the largest lambda up to which accuracy stays within one point" \
            in out.stdout
    out = mal("curve", "--base", path, "--target", path, "--data", "digits", "--grid", "3",
              "--repair", "--json")
    assert json.loads(out.stdout)["repair_note"] == words


def test_curve_of_a_plan_step_as_the_app_draws_it(mal, small_zoo, tmp_path):
    """The app's Run draws the curve of a plan's step with the steps before it merged; the CLI
    could only sweep layer pairs from the base itself. `mal curve --plan P --step N` draws the
    same curve: step 1 equals the layer-pair curve from the base, and step 2's lambda 0 is the
    model the plan's first step alone assembles."""
    base, a, b = (str(small_zoo.path_of(n)) for n in ("mlp-w32-s0", "mlp-w32-s1", "mlp-w64-s0"))
    steps = [AssemblyStep("a", "layers.1", "layers.1", 0.5),
             AssemblyStep("b", "layers.0", "layers.0", 0.4)]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(AssemblyPlan(base, {"a": a, "b": b}, "digits", steps).to_json()))
    first = json.loads(mal("curve", "--plan", str(plan), "--step", "1", "--grid", "3",
                           "--json").stdout)
    pair = json.loads(mal("curve", "--base", base, "--target", a, "--data", "digits",
                          "--layers", "layers.1:layers.1", "--align", "chain", "--grid", "3",
                          "--json").stdout)
    for series in ("naive", "aligned"):
        assert first[series]["loss"] == pytest.approx(pair[series]["loss"], abs=1e-6)
    second = mal("curve", "--plan", str(plan), "--grid", "3").stdout  # the last step
    assert second.startswith("step 2 of 2: b:layers.0 -> layers.0 [chain], lambda 0 = the "
                             "base with step 1 merged")
    one = tmp_path / "one.json"
    one.write_text(json.dumps(AssemblyPlan(base, {"a": a}, "digits", steps[:1]).to_json()))
    mal("assemble", str(one), "--out", str(tmp_path / "one.safetensors"))
    scored = json.loads(mal("evaluate", str(tmp_path / "one.safetensors"), "--data", "digits",
                            "--json").stdout)
    curve = json.loads(mal("curve", "--plan", str(plan), "--grid", "3", "--json").stdout)
    assert curve["naive"]["loss"][0] == pytest.approx(scored["loss"], abs=1e-5)
    assert curve["alignment"]["plan_steps"] == 2
    (tmp_path / "empty").mkdir()
    for args, words in ((["--plan", str(plan), "--base", base], "leave out --base"),
                        # text for an image model: said first, not "no .txt files in ..."
                        (["--plan", str(plan), "--data", f"text:{tmp_path / 'empty'}"],
                         "reads images or features, not token ids"),
                        (["--plan", str(plan), "--step", "3"], f"{plan}: no step 3 in the plan"),
                        (["--data", "digits"], "needs --base, --target, or --plan PLAN"),
                        (["--base", base, "--target", a, "--data", "digits", "--step", "1"],
                         "--step picks a step of --plan")):
        err = mal("curve", *args, check=False).stderr
        assert words in err and "Traceback" not in err, err


def test_curve_with_layers(mal, small_zoo):
    out = mal("curve", "--base", str(small_zoo.path_of("mlp-w32-s0")), "--target",
              str(small_zoo.path_of("mlp-w64-s0")), "--data", "digits", "--grid", "3",
              "--layers", "layers.0:layers.0", "layers.1:layers.1", "--align", "chain", "--json")
    assert len(json.loads(out.stdout)["aligned"]["loss"]) == 3


def test_assemble_and_evaluate(mal, small_zoo, tmp_path):
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"wide": str(small_zoo.path_of("mlp-w64-s0"))}, data="digits",
                        steps=[AssemblyStep("wide", "layers.1", "layers.1", 0.3)])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    out_path = tmp_path / "out.safetensors"
    obj = json.loads(mal("assemble", str(plan_path), "--out", str(out_path), "--json").stdout)
    assert obj["out"] == str(out_path) and out_path.exists()
    # a chain step: float32 copies of both models, and the merged layer
    assert obj["preflight"]["memory_estimate_bytes"] > 4 * (64 * 64 + 32 * 32)
    step = obj["steps"][0]
    assert step["out"]["case"] == "narrower" and step["out"]["dropped"] == 32
    # the plan names its data: base and result are scored on it
    assert set(obj["evaluation"]) == {"data", "base", "merged"}
    assert obj["evaluation"]["base"]["accuracy"] > 0.5
    assert step["objective"]
    ev = json.loads(mal("evaluate", str(out_path), "--data", "digits", "--json").stdout)
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["loss"] > 0


def test_pt2_paths_work_everywhere(mal, small_zoo, tmp_path):
    from mal_desktop.core.io.files import load_model

    model = load_model(small_zoo.path_of("mlp-w32-s1"))
    # export with a dynamic batch axis, as a user would for a reusable program
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model.module, (model.example_input(4),),
                                  dynamic_shapes=({0: batch},))
    pt2 = tmp_path / "user.pt2"
    torch.export.save(program, str(pt2))
    assert json.loads(mal("inspect", str(pt2), "--json").stdout)["form"] == "pt2"
    obj = json.loads(mal("curve", "--base", str(small_zoo.path_of("mlp-w32-s0")), "--target",
                         str(pt2), "--data", "digits", "--grid", "3", "--json").stdout)
    assert obj["aligned"]["loss"][-1] == pytest.approx(obj["naive"]["loss"][-1], abs=1e-5)
    ev = json.loads(mal("evaluate", str(pt2), "--data", "digits", "--json").stdout)
    assert ev["accuracy"] > 0.5
    # a .pt2 as the base and as a donor of an assembly; the result references the program
    plan = AssemblyPlan(base=str(pt2), zoo={"wide": str(small_zoo.path_of("mlp-w64-s0")),
                                            "same": str(pt2)},
                        steps=[AssemblyStep("wide", "layers.1", "layers.1", 0.3),
                               AssemblyStep("same", "head", "head", 0.5, "none")])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    out = tmp_path / "from_pt2.safetensors"
    mal("assemble", str(plan_path), "--out", str(out), "--json")
    merged = load_model(out)
    assert merged.arch["kind"] == "pt2" and merged.program is not None
    ev = json.loads(mal("evaluate", str(out), "--data", "digits", "--json").stdout)
    assert ev["accuracy"] > 0.5


def test_a_fixed_batch_pt2_program_evaluates_on_any_dataset_size(small_zoo, tmp_path):
    from mal_desktop.core.evaluate.datasets import load_dataset
    from mal_desktop.core.evaluate.evaluator import evaluate_model
    from mal_desktop.core.io.files import load_model

    model = load_model(small_zoo.path_of("cnn-w8-s0"))
    pt2 = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(model.module, (model.example_input(7),)), str(pt2))
    data = load_dataset("digits")  # 359 test samples: not a multiple of 7
    assert evaluate_model(load_model(pt2), data).accuracy == evaluate_model(model, data).accuracy


@pytest.mark.parametrize("args, needle", [
    (["inspect", "/nonexistent/model.safetensors"], "model.safetensors"),
    (["evaluate", "README.md", "--data", "digits"], "README.md"),
    # the dataset is checked before any model file is read: the error names it
    (["curve", "--base", "x.safetensors", "--target", "y.safetensors", "--data", "nope"],
     "unknown dataset 'nope'"),
])
def test_errors_are_one_line_with_nonzero_exit(mal, args, needle):
    out = mal(*args, "--json", check=False)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mal: error:"), out.stderr
    assert needle in lines[0]
    assert out.stdout == ""


def test_zoo_list_reads_a_built_zoo(mal, small_zoo):
    obj = json.loads(mal("zoo", "list", "--dir", str(small_zoo.dir), "--json").stdout)
    names = {m["name"] for m in obj["models"]}
    assert {"mlp-w32-s0", "cnn-w8-s0"} <= names
    assert all(0.0 < m["test_accuracy"] <= 1.0 for m in obj["models"])


def test_the_installed_entry_point_runs_as_its_own_process(small_zoo):
    """One real process: `python -m mal_desktop.cli` (what the `mal` script runs) prints one JSON
    object on stdout and, on a bad file, one error line on stderr with exit code 1."""
    ok = subprocess.run([sys.executable, "-m", "mal_desktop.cli", "zoo", "list", "--dir",
                         str(small_zoo.dir), "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert {m["name"] for m in json.loads(ok.stdout)["models"]} >= {"mlp-w32-s0"}
    bad = subprocess.run([sys.executable, "-m", "mal_desktop.cli", "inspect", "/nonexistent/m.pt2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "/nonexistent/m.pt2" in bad.stderr


def _hashes(*paths):
    import hashlib
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.mark.parametrize("out, message", [
    ("missing_folder/out.safetensors", "does not exist"),
    ("out.pt", "as .safetensors files"),
    ("a_dir.safetensors", "is a directory"),
    ("read_only/out.safetensors", "is not writable"),
])
def test_assemble_refuses_a_bad_output_before_any_work(mal, small_zoo, tmp_path, out, message):
    import os
    if out.startswith("read_only") and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "a_dir.safetensors").mkdir()
    (tmp_path / "read_only").mkdir(mode=0o500)
    base, donor = small_zoo.path_of("mlp-w32-s0"), small_zoo.path_of("mlp-w64-s0")
    plan = AssemblyPlan(base=str(base), zoo={"wide": str(donor)},
                        steps=[AssemblyStep("wide", "layers.1", "layers.1", 0.3)])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    before = _hashes(base, donor, plan_path)
    files_before = sorted(tmp_path.rglob("*"))
    ran = mal("assemble", str(plan_path), "--out", str(tmp_path / out), check=False)
    assert ran.returncode == 1
    assert ran.stderr.count("\n") == 1 and message in ran.stderr and out.split("/")[-1] in ran.stderr
    # refused in pre-flight: no progress from the assembly itself, nothing written, inputs intact
    assert "aligning" not in ran.stderr
    assert sorted(tmp_path.rglob("*")) == files_before
    assert _hashes(base, donor, plan_path) == before


@pytest.mark.parametrize("data, message", [
    ("no-such-dataset", "unknown dataset 'no-such-dataset'"),
    ("missing.npz", "missing.npz"),
])
def test_assemble_with_bad_plan_data_writes_nothing(mal, small_zoo, tmp_path, data, message):
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"wide": str(small_zoo.path_of("mlp-w64-s0"))}, data=data,
                        steps=[AssemblyStep("wide", "layers.1", "layers.1", 0.3)])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    out = tmp_path / "out.safetensors"
    ran = mal("assemble", str(plan_path), "--out", str(out), check=False)
    assert ran.returncode == 1 and message in ran.stderr and ran.stderr.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_assemble_refuses_a_misspelt_method_parameter_naming_the_plan(mal, small_zoo, tmp_path):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({
        "base": str(small_zoo.path_of("mlp-w32-s0")),
        "zoo": {"wide": str(small_zoo.path_of("mlp-w64-s0"))},
        "steps": [{"source": "wide", "source_layer": "layers.1", "base_layer": "layers.1",
                   "lambda": 0.3, "method": "ties", "params": {"densty": 0.1}}]}))
    ran = mal("assemble", str(plan_path), "--out", str(tmp_path / "o.safetensors"), check=False)
    assert ran.returncode == 1 and ran.stderr.startswith(f"mal: error: {plan_path}: step 1:")
    assert "(valid: density)" in ran.stderr and not (tmp_path / "o.safetensors").exists()


def test_eval_matrix_out_naming_a_file_is_refused_before_the_work(mal, small_zoo, tmp_path):
    taken = tmp_path / "results.json"
    taken.write_text("{}")
    ran = mal("eval-matrix", "--models", str(small_zoo.path_of("mlp-w32-s0")), "--datasets",
              "digits", "--cache", str(tmp_path / "cache"), "--out", str(taken), check=False)
    assert ran.returncode == 1 and ran.stderr.count("\n") == 1
    assert f"{taken}: --out names a folder" in ran.stderr
    assert taken.read_text() == "{}" and not (tmp_path / "cache").exists()
    # an output that cannot be written was found out only after every cell was computed
    # (root ignores file modes: /proc takes no new files from anyone)
    ran = mal("eval-matrix", "--models", str(small_zoo.path_of("mlp-w32-s0")), "--datasets",
              "digits", "--cache", str(tmp_path / "cache"), "--out", "/proc/mal-out",
              check=False)
    assert ran.returncode == 1 and "/proc/mal-out: cannot write in /proc" in ran.stderr
    assert not (tmp_path / "cache").exists()


def test_eval_matrix_scores_a_project_as_its_plan_sharing_its_cells(mal, small_zoo, tmp_path):
    """`mal assemble` and `mal curve --plan` took the app's .malproj, `mal eval-matrix` refused
    it ("not a model file"): the app's "merged (current plan)" row could not be recomputed
    from the saved project. A project is scored as its plan, with the same content hash, so
    the second reference reads the first one's cells."""
    from mal_desktop.core.project.document import Project, save_project

    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"d": str(small_zoo.path_of("mlp-w32-s1"))},
                        steps=[AssemblyStep("d", "layers.1", "layers.1", 0.4)])
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_json()))
    project = save_project(Project(plan, "digits", {}), tmp_path / "work.malproj")
    cache = str(tmp_path / "cache")
    first = json.loads(mal("eval-matrix", "--models", str(tmp_path / "plan.json"),
                           "--datasets", "digits", "--cache", cache, "--json").stdout)
    again = json.loads(mal("eval-matrix", "--models", str(project), "--datasets", "digits",
                           "--cache", cache, "--json").stdout)
    assert again["models"][0]["hash"] == first["models"][0]["hash"]
    assert (again["computed"], again["cached"]) == (0, 1)
    assert again["cells"][0]["metrics"] == first["cells"][0]["metrics"]
    ran = mal("eval-matrix", "--models", str(tmp_path / "gone.malproj"), "--datasets",
              "digits", "--cache", cache, check=False)
    assert ran.returncode == 1 and "gone.malproj: no such project file" in ran.stderr


def test_a_full_disk_is_one_line_naming_the_file(mal, small_zoo, tmp_path, monkeypatch):
    import errno
    import os

    real_replace = os.replace

    def disk_full(src, dst):  # the last step of every atomic write
        if str(dst).endswith(".safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full)
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"wide": str(small_zoo.path_of("mlp-w64-s0"))},
                        steps=[AssemblyStep("wide", "layers.1", "layers.1", 0.3)])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    out = tmp_path / "out.safetensors"
    ran = mal("assemble", str(plan_path), "--out", str(out), check=False)
    assert ran.returncode == 1
    last = ran.stderr.strip().splitlines()[-1]
    assert last == f"mal: error: {out}: cannot write: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]

    # the eval matrix's own files and its cache report the same way
    def cache_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", cache_full)
    ran = mal("eval-matrix", "--models", str(small_zoo.path_of("mlp-w32-s0")), "--datasets",
              "digits", "--cache", str(tmp_path / "cache"), check=False)
    assert ran.returncode == 1
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mal: error: {tmp_path / 'cache'}") and "No space left" in last


def test_assemble_runs_a_project_saved_by_the_app(mal, small_zoo, tmp_path):
    from mal_desktop.core.io.files import load_model
    from mal_desktop.core.project.document import Project, save_project

    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"wide": str(small_zoo.path_of("mlp-w64-s0"))}, data="digits",
                        steps=[AssemblyStep("wide", "layers.1", "layers.1", 0.3)])
    project = save_project(Project(plan=plan), tmp_path / "work.malproj")
    via_project = tmp_path / "from_project.safetensors"
    obj = json.loads(mal("assemble", str(project), "--out", str(via_project), "--json").stdout)
    assert obj["evaluation"]["data"] == "digits" and obj["steps"][0]["out"]["case"] == "narrower"
    # the same plan as PLAN.json gives the same weights
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    via_plan = tmp_path / "from_plan.safetensors"
    mal("assemble", str(plan_path), "--out", str(via_plan), "--json")
    a, b = load_model(via_project).state(), load_model(via_plan).state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    broken = tmp_path / "broken.malproj"
    broken.write_text("{")
    ran = mal("assemble", str(broken), "--out", str(tmp_path / "x.safetensors"), check=False)
    assert ran.returncode == 1 and str(broken) in ran.stderr and ran.stderr.count("\n") == 1


def test_json_output_has_no_nan_tokens(capsys):
    """--json is strict JSON: a non-finite number is null (core/jsonio), never NaN or "nan"."""
    from mal_desktop.cli.output import emit

    class Args:
        json = True

    emit(Args(), {"barrier": float("nan"), "loss": [1.0, float("inf")]}, lambda: "")
    out = capsys.readouterr().out
    assert json.loads(out) == {"barrier": None, "loss": [1.0, None]}
    assert "NaN" not in out and "nan" not in out and "Infinity" not in out


def test_json_says_which_alignment_ran_and_which_spaces_were_fixed(mal, small_zoo, tmp_path):
    """A chain step whose layers sit at different depths falls back to local alignment: the
    assemble and curve JSON say so, why, and name every fixed space with its reason."""
    base, wide = str(small_zoo.path_of("mlp-w32-s0")), str(small_zoo.path_of("mlp-w64-s0"))
    plan = AssemblyPlan(base=base, zoo={"wide": wide},
                        steps=[AssemblyStep("wide", "layers.1", "layers.0", 0.3, "chain"),
                               AssemblyStep("wide", "layers.1", "layers.1", 0.3, "chain")])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json()))
    obj = json.loads(mal("assemble", str(plan_path), "--out", str(tmp_path / "m.safetensors"),
                         "--json").stdout)
    fell, chained = obj["steps"]
    assert (fell["requested"], fell["align"], fell["fallback"]) == ("chain", "local", True)
    assert "chain alignment not applicable" in fell["fallback_reason"]
    assert "same depth" in fell["fallback_reason"] and fell["note"] == fell["fallback_reason"]
    # the input side is fixed: one LAP on the output side is the exact optimum, one run
    assert (fell["start"], fell["runs"]) == ("identity", 1)
    # base layers.0 reads the network input: fixed, and the report says by what
    assert fell["in"] == {**fell["in"], "case": "fixed", "space": "P_input",
                          "reason": "network input"}
    assert fell["out"]["reason"] == "" and fell["out"]["case"] == "narrower"
    by_space = {s["base"]: s for s in fell["spaces"]}
    assert by_space["P_input"]["fixed"] and not by_space["P_input"]["optimised"]
    assert by_space["P_input"]["reason"] == "network input"
    assert by_space["P_layers.0"]["optimised"] and not by_space["P_layers.0"]["fixed"]

    assert (chained["requested"], chained["align"], chained["fallback"]) == ("chain", "chain",
                                                                             False)
    assert chained["fallback_reason"] == "" and chained["runs"] == 4
    spaces = {s["base"]: s for s in chained["spaces"]}
    assert spaces["P_input"] == {"base": "P_input", "target": "P_input", "base_size": 64,
                                 "target_size": 64, "fixed": True, "reason": "network input",
                                 "optimised": False}
    assert spaces["P_layers.0"]["optimised"] and spaces["P_layers.1"]["optimised"]

    out = json.loads(mal("curve", "--base", base, "--target", wide, "--data", "digits",
                         "--grid", "2", "--layers", "layers.1:layers.0", "--json").stdout)
    report = out["alignment"]
    assert (report["requested"], report["align"], report["fallback"]) == ("chain", "local", True)
    assert "chain alignment not applicable" in report["fallback_reason"]
    assert report["steps"][0]["spaces"] == fell["spaces"]

    other = str(small_zoo.path_of("mlp-w32-s1"))
    whole = json.loads(mal("curve", "--base", base, "--target", other, "--data", "digits",
                           "--grid", "2", "--json").stdout)["alignment"]
    assert (whole["align"], whole["requested"], whole["fallback"]) == ("weight", "weight", False)
    assert whole["runs"] == 4 and whole["final_objective"] >= whole["identity_objective"]
    assert {s["reason"] for s in whole["fixed_spaces"]} == {"network input", "class output"}
    assert whole["free_spaces"] == whole["spaces"] - 2


def test_curve_restarts_sets_the_descents_of_whole_model_matching(small_zoo, capsys):
    """One descent (rebasin's amount of work) against the default four: the four include the
    one from the identity, so they never end at a lower J."""
    a, b = str(small_zoo.path_of("mlp-w32-s0")), str(small_zoo.path_of("mlp-w32-s1"))
    args = ["curve", "--base", a, "--target", b, "--data", "digits", "--grid", "2", "--json"]
    reports = {}
    for restarts in (["--restarts", "1"], []):
        assert main(args + restarts) == 0
        reports[len(restarts)] = json.loads(capsys.readouterr().out)["alignment"]
    one, default = reports[2], reports[0]
    assert (one["runs"], default["runs"]) == (1, 4)
    assert one["start"] == "identity"
    assert default["final_objective"] >= one["final_objective"] >= one["identity_objective"]
    with pytest.raises(SystemExit) as refused:
        main(args + ["--restarts", "0"])
    assert refused.value.code == 2 and "whole number >= 1" in capsys.readouterr().err
    for other in (["--align", "activation"], ["--layers", "layers.0:layers.0"]):
        assert main(args + ["--restarts", "2"] + other) != 0  # it would do nothing: refused
        assert "--restarts sets the descents" in capsys.readouterr().err


def _plan_file(small_zoo, tmp_path, steps, name="plan.json", data=None) -> Path:
    plan_path = tmp_path / name
    doc = {"base": str(small_zoo.path_of("mlp-w32-s0")),
           "zoo": {"wide": str(small_zoo.path_of("mlp-w64-s0"))}, "steps": steps}
    if data is not None:
        doc["data"] = data
    plan_path.write_text(json.dumps(doc))
    return plan_path


def test_assemble_errors_name_the_plan_and_the_step_once(mal, small_zoo, tmp_path):
    """Messages a user met: 'step 1: step wide:layers.1 -> ...' (the word twice), an alignment
    error without the base layer, and a wrong layer or dataset without the plan's file."""
    step = {"source": "wide", "source_layer": "layers.1", "base_layer": "layers.1"}
    cases = [({**step, "lambda": -0.5}, None,
              "step 1: wide:layers.1 -> layers.1: lambda must be in [0, 1], got -0.5"),
             ({**step, "align": "sideways"}, None,
              "step 1: wide:layers.1 -> layers.1: alignment must be one of"),
             ({**step, "base_layer": "layers.9"}, None,
              "step 1 (wide:layers.1 -> layers.9): the base has no layer 'layers.9'"),
             (step, "no-such-dataset", "unknown dataset 'no-such-dataset'")]
    for i, (raw, data, message) in enumerate(cases):
        plan_path = _plan_file(small_zoo, tmp_path, [raw], f"plan{i}.json", data)
        ran = mal("assemble", str(plan_path), "--out", str(tmp_path / "o.safetensors"),
                  "--quiet", check=False)
        assert ran.returncode == 1 and ran.stderr.count("\n") == 1, ran.stderr
        assert ran.stderr.startswith(f"mal: error: {plan_path}: "), ran.stderr
        assert message in ran.stderr and "step 1: step" not in ran.stderr, ran.stderr
    empty = _plan_file(small_zoo, tmp_path, [], "empty.json")
    ran = mal("assemble", str(empty), "--out", str(tmp_path / "o.safetensors"), check=False)
    assert ran.returncode == 1 and "the plan has no steps: add at least one" in ran.stderr
    assert "drag" not in ran.stderr  # the app's words, not the command line's


def test_assemble_warns_when_a_plan_merges_a_layer_twice(mal, small_zoo, tmp_path):
    step = {"source": "wide", "source_layer": "layers.1", "base_layer": "layers.1",
            "lambda": 0.3}
    other = {"source": "wide", "source_layer": "layers.0", "base_layer": "layers.0"}
    plan_path = _plan_file(small_zoo, tmp_path, [step, other, step])
    ran = mal("assemble", str(plan_path), "--out", str(tmp_path / "o.safetensors"), "--quiet")
    assert ran.stderr.splitlines()[0] == (
        f"mal: warning: {plan_path}: steps 1 and 3 both merge wide:layers.1 -> layers.1: that "
        "layer is merged twice")


def test_usage_errors_show_the_commands_own_usage(capsys):
    """`mal curve --grid 0` printed the top-level usage; options that do not apply were listed
    (--arch for the demo zoo and the study)."""
    with pytest.raises(SystemExit) as refused:
        main(["curve", "--base", "a", "--target", "b", "--data", "digits", "--grid", "0"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.startswith("usage: mal curve ")
    assert "--grid: needs at least 2 points (0 and 1), got '0'" in err
    for command in (["zoo", "build"], ["zoo", "list"], ["study"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert "--json" in text and "--arch" not in text, command
    with pytest.raises(SystemExit):
        main(["curve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--base MODEL the model merged into (lambda 0)" in text
    assert "--layers SRC:DST [SRC:DST ...] merge only these layers" in text


def test_every_argument_of_every_command_says_what_it_takes():
    """`mal inspect --help` listed `model` with no word of what it may be (a file? a folder?),
    and `mal evaluate --data` had no help at all."""
    import argparse

    from mal_desktop.cli import build_parser

    def commands(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, path + (name,))
        yield path, parser

    silent = [(" ".join(path), action.dest) for path, parser in commands(build_parser())
              for action in parser._actions
              if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
              and not action.help]
    assert silent == []
