"""The models x datasets matrix: model references, cache hits and misses, resume after cancel,
JSON/CSV output."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mal_desktop.core.errors import MalError, ModelFileError
from mal_desktop.core.toolkit import matrix as matrix_mod
from mal_desktop.core.evaluate.datasets import load_dataset
from mal_desktop.core.evaluate.evaluator import evaluate_model
from mal_desktop.core.toolkit.matrix import MatrixCell, cell_key, eval_matrix_job
from mal_desktop.core.evaluate.metric_registry import METRICS, register_metric
from mal_desktop.core.toolkit.model_refs import (MODEL_KINDS, FileRef, PlanRef, memory_ref,
                                                  parse_model_ref, plan_ref, register_model_kind)
from mal_desktop.core.evaluate.pipeline import PipelineSpec
from mal_desktop.core.io.files import load_model, save_model
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.jobs import assemble_job
from mal_desktop.core.merge.plan import load_plan
from mal_desktop.core.progress import CancelToken, Cancelled, run_job
from mal_desktop.core.arch.families import build_model, full_config


def _mlp(path: Path, seed: int, widths=(8,), input_shape=(1, 4, 4)) -> Path:
    config = full_config("mlp", {"widths": list(widths), "input_shape": list(input_shape),
                                 "num_classes": 3})
    torch.manual_seed(seed)
    model = LoadedModel(build_model("mlp", config), {"kind": "family", "family": "mlp",
                                                     "config": config},
                        tuple(input_shape), 3, metadata={"name": path.stem})
    return save_model(model, path)


def _npz(path: Path, seed: int, n: int = 30) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(n, 1, 4, 4)).astype(np.float32),
             y=rng.integers(0, 3, size=n))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {"a": _mlp(tmp_path / "a.safetensors", 0), "b": _mlp(tmp_path / "b.safetensors", 1),
            "c": _mlp(tmp_path / "c.safetensors", 2), "d1": _npz(tmp_path / "d1.npz", 0),
            "d2": _npz(tmp_path / "d2.npz", 1), "cache": tmp_path / "cache"}


def _run(refs, data, cache, **kw):
    return run_job(eval_matrix_job([str(r) for r in refs], [str(d) for d in data],
                                   cache_dir=cache, **kw))


def test_cells_match_the_evaluator(files) -> None:
    result = _run([files["a"], files["b"]], [files["d1"], files["d2"]], files["cache"])
    assert (result.computed, result.cached) == (4, 0)
    assert [(c.model, c.dataset) for c in result.cells] == [
        (str(files[m]), str(files[d])) for m in "ab" for d in ("d1", "d2")]
    for c in result.cells:
        ref = evaluate_model(load_model(c.model), load_dataset(c.dataset))
        assert c.metrics["accuracy"] == pytest.approx(ref.accuracy)
        assert c.metrics["loss"] == pytest.approx(ref.loss, rel=1e-5)
        assert c.n == 30 and not c.cached and c.error is None
        assert sum(v["n"] for v in c.per_category.values()) == 30
    cm = result.confusion_matrix(str(files["a"]), str(files["d1"]))
    assert cm.shape == (3, 3) and cm.sum() == 30
    assert np.trace(cm) / 30 == pytest.approx(result.cells[0].metrics["accuracy"])


def test_second_run_computes_nothing_and_a_new_model_one_row(files, monkeypatch) -> None:
    first = _run([files["a"], files["b"]], [files["d1"], files["d2"]], files["cache"])
    # Any model run now would be a cache miss: make it fail loudly.
    monkeypatch.setattr(matrix_mod, "run_pipeline",
                        lambda *a, **k: pytest.fail("the cache should have answered"))
    again = _run([files["a"], files["b"]], [files["d1"], files["d2"]], files["cache"])
    assert (again.computed, again.cached) == (0, 4)
    assert [c.metrics for c in again.cells] == [c.metrics for c in first.cells]
    assert all(c.cached for c in again.cells)
    monkeypatch.undo()
    grown = _run([files["a"], files["b"], files["c"]], [files["d1"], files["d2"]],
                 files["cache"])
    assert (grown.computed, grown.cached) == (2, 4)
    assert [c.cached for c in grown.cells] == [True] * 4 + [False] * 2


def test_resume_after_cancel(files) -> None:
    cancel = CancelToken()
    job = eval_matrix_job([str(files["a"]), str(files["b"])], [str(files["d1"]),
                                                               str(files["d2"])],
                          cache_dir=files["cache"], cancel=cancel)
    finished = 0
    with pytest.raises(Cancelled):
        for event in job:
            if isinstance(event.payload, MatrixCell):
                finished += 1
                if finished == 3:
                    cancel.cancel()
    assert finished == 3
    resumed = _run([files["a"], files["b"]], [files["d1"], files["d2"]], files["cache"])
    assert (resumed.computed, resumed.cached) == (1, 3)


def test_same_content_elsewhere_hits_the_cache(files, tmp_path: Path) -> None:
    _run([files["a"]], [files["d1"]], files["cache"])
    moved = tmp_path / "elsewhere" / "renamed.safetensors"
    moved.parent.mkdir()
    shutil.copy(files["a"], moved)
    again = _run([moved], [files["d1"]], files["cache"])
    assert (again.computed, again.cached) == (0, 1)


def test_damaged_cache_entries_are_recomputed(files) -> None:
    first = _run([files["a"]], [files["d1"]], files["cache"])
    json_path = Path(first.cells[0].samples_file).with_suffix(".json")
    json_path.write_text("{not json")
    assert _run([files["a"]], [files["d1"]], files["cache"]).computed == 1
    Path(first.cells[0].samples_file).unlink()
    assert _run([files["a"]], [files["d1"]], files["cache"]).computed == 1


def test_a_metric_registered_later_comes_from_the_per_sample_file(files, monkeypatch) -> None:
    _run([files["a"]], [files["d1"]], files["cache"], metrics=["accuracy"])
    try:
        @register_metric("mean_confidence_test", "sample", "mean max probability")
        def _mc(s) -> float:
            return float(s.confidence.mean())

        monkeypatch.setattr(matrix_mod, "run_pipeline",
                            lambda *a, **k: pytest.fail("no model run needed"))
        result = _run([files["a"]], [files["d1"]], files["cache"],
                      metrics=["accuracy", "mean_confidence_test"])
        samples = result.samples(str(files["a"]), str(files["d1"]))
        assert result.cached == 1
        assert result.cells[0].metrics["mean_confidence_test"] == \
            pytest.approx(samples.confidence.mean())
        assert "mean_confidence_test" in next(iter(result.cells[0].per_category.values()))
    finally:
        METRICS.pop("mean_confidence_test", None)


def test_a_model_that_does_not_fit_gives_an_error_cell(files, tmp_path: Path) -> None:
    wide = _mlp(tmp_path / "wide.safetensors", 3, input_shape=(1, 5, 5))
    result = _run([files["a"], wide], [files["d1"]], files["cache"])
    assert result.cell(str(files["a"]), str(files["d1"])).error is None
    bad = result.cell(str(wide), str(files["d1"]))
    assert "expects (1, 5, 5)" in bad.error and bad.metrics == {}
    assert len(result.errors) == 1 and result.computed == 1


def test_bad_requests_raise_one_line_errors(files) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        _run([files["a"].with_name("missing.safetensors")], [files["d1"]], files["cache"])
    with pytest.raises(MalError, match="unknown sample metric 'f1'"):
        _run([files["a"]], [files["d1"]], files["cache"], metrics=["f1"])
    with pytest.raises(MalError, match="unknown dataset"):
        _run([files["a"]], ["no-such-dataset"], files["cache"])
    with pytest.raises(MalError, match="no models"):
        _run([], [files["d1"]], files["cache"])


def test_json_and_csv(files) -> None:
    result = _run([files["a"], files["b"]], [files["d1"]], files["cache"],
                  metrics=["accuracy", "per_class_accuracy"])
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["metrics"] == ["accuracy", "per_class_accuracy"]
    assert [m["hash"] for m in doc["models"]] == [parse_model_ref(str(files[k])).content_hash()
                                                  for k in "ab"]
    assert doc["cells"][0]["metrics"]["accuracy"] == result.cells[0].metrics["accuracy"]
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(rows) == 2
    assert float(rows[1]["accuracy"]) == result.cells[1].metrics["accuracy"]
    per_class = result.cells[0].metrics["per_class_accuracy"]
    for tag, value in per_class.items():
        assert float(rows[0][f"per_class_accuracy[{tag}]"]) == value
    tags = [c[len("per_class_accuracy["):-1] for c in rows[0] if c.startswith("per_class")]
    assert tags == sorted(tags, key=int)  # class 10 after class 9, not after 1


def test_cache_key_parts() -> None:
    spec = PipelineSpec()
    key = cell_key("m", "d", spec)
    assert key == cell_key("m", "d", PipelineSpec())
    assert len({key, cell_key("m2", "d", spec), cell_key("m", "d2", spec),
                cell_key("m", "d", PipelineSpec(aggregate="none"))}) == 4


# -- model references --------------------------------------------------------------------
def _plan(folder: Path, base: str, donor: str, lam: float = 0.5) -> Path:
    path = folder / "plan.json"
    path.write_text(json.dumps({"base": base, "zoo": {"d": donor}, "steps": [
        {"source": "d", "source_layer": "layers.0", "base_layer": "layers.0", "lambda": lam}]}))
    return path


def test_plan_reference_is_assembled_on_the_fly_and_hashed_by_content(files, tmp_path,
                                                                      monkeypatch) -> None:
    plan_path = _plan(tmp_path, "a.safetensors", "b.safetensors")
    ref = parse_model_ref(str(plan_path))
    assert isinstance(ref, PlanRef) and ref.name == "plan"
    result = _run([plan_path], [files["d1"]], files["cache"])
    merged = run_job(assemble_job(load_plan(plan_path))).model
    expected = evaluate_model(merged, load_dataset(str(files["d1"])))
    assert result.cells[0].metrics["accuracy"] == pytest.approx(expected.accuracy)
    assert result.cells[0].metrics["loss"] == pytest.approx(expected.loss, rel=1e-5)
    # The same plan over copies of the same files elsewhere is the same model...
    other = tmp_path / "copy"
    other.mkdir()
    for name in ("a", "b"):
        shutil.copy(files[name], other / f"{name}.safetensors")
    moved = _plan(other, "a.safetensors", "b.safetensors")
    assert parse_model_ref(str(moved)).content_hash() == ref.content_hash()
    monkeypatch.setattr(PlanRef, "load_job", lambda *a, **k: pytest.fail("no assembly needed"))
    assert _run([moved], [files["d1"]], files["cache"]).cached == 1
    monkeypatch.undo()
    # ... while another lambda or another donor is another model.
    assert parse_model_ref(str(_plan(other, "a.safetensors", "b.safetensors", 0.25))) \
        .content_hash() != ref.content_hash()
    assert parse_model_ref(str(_plan(other, "a.safetensors", str(files["c"])))) \
        .content_hash() != ref.content_hash()


def test_a_plan_in_memory_shares_the_plan_files_cache_and_assembles_from_memory(
        files, tmp_path: Path, monkeypatch) -> None:
    plan_path = _plan(tmp_path, "a.safetensors", "b.safetensors")
    plan = load_plan(plan_path)  # what the GUI holds: absolute paths, no file of its own
    ref = plan_ref(plan, name="current", text="plan:current")
    assert (ref.text, ref.name, ref.kind) == ("plan:current", "current", "plan")
    assert ref.content_hash() == parse_model_ref(str(plan_path)).content_hash()
    assert _run([plan_path], [files["d1"]], files["cache"]).computed == 1
    monkeypatch.setattr(PlanRef, "load_job", lambda *a, **k: pytest.fail("no assembly needed"))
    again = run_job(eval_matrix_job([ref], [str(files["d1"])], cache_dir=files["cache"]))
    assert (again.computed, again.cached) == (0, 1) and again.cells[0].model == "plan:current"
    monkeypatch.undo()
    # Assembled from the models given (by plan path), not from the files: here the donor in
    # memory is another model than the file, so the merge differs from the files' merge.
    donor = load_model(files["c"])
    memory = plan_ref(plan, models={plan.base: load_model(files["a"]),
                                    plan.zoo["d"]: donor}).load()
    from_files = run_job(assemble_job(plan)).model
    from_c = run_job(assemble_job(plan, models={plan.zoo["d"]: donor})).model
    key = "layers.0.weight"
    assert torch.equal(memory.state()[key], from_c.state()[key])
    assert not torch.equal(memory.state()[key], from_files.state()[key])
    missing = plan_ref(load_plan(_plan(tmp_path, "a.safetensors", "gone.safetensors")),
                       name="current")
    with pytest.raises(MalError, match="current: the plan names .*gone.safetensors"):
        missing.content_hash()


def test_a_cell_reads_its_per_sample_scores(files) -> None:
    cell = _run([files["a"]], [files["d1"]], files["cache"]).cells[0]
    scores = cell.samples()
    assert len(scores) == 30 and float(scores.correct.mean()) == \
        pytest.approx(cell.metrics["accuracy"])
    with pytest.raises(MalError, match="no per-sample scores \\(model did not load\\)"):
        MatrixCell("m", "d", "k", error="model did not load").samples()
    Path(cell.samples_file).write_bytes(b"not an npz")
    with pytest.raises(MalError, match="unreadable per-sample scores"):
        cell.samples()


def test_progress_never_goes_back(files, tmp_path: Path) -> None:
    plan_path = _plan(tmp_path, "a.safetensors", "b.safetensors")
    events = []
    run_job(eval_matrix_job([str(files["a"]), str(plan_path)], [str(files["d1"]),
                                                                  str(files["d2"])],
                            cache_dir=files["cache"]), events.append)
    fractions = [e.fraction for e in events]
    assert fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert sum(isinstance(e.payload, MatrixCell) for e in events) == 4


def test_zoo_references_find_language_models_in_their_own_zoo(files, tmp_path: Path,
                                                              monkeypatch) -> None:
    """zoo:llama-w64-s0-code named the image zoo's index and failed, though `mal zoo list
    --language` found the model: without --zoo, zoo:NAME looks in both default zoos."""
    for var, folder, name in (("MAL_ZOO_DIR", "images", "mlp"), ("MAL_LM_ZOO_DIR", "text", "lm")):
        zoo = tmp_path / folder
        zoo.mkdir()
        shutil.copy(files["a"], zoo / f"{name}.safetensors")
        (zoo / "zoo.json").write_text(json.dumps({"version": 1, "entries": [{
            "name": name, "path": f"{name}.safetensors", "family": "mlp", "config": {},
            "dataset": "x", "seed": 0, "test_accuracy": 0.5}]}))
        monkeypatch.setenv(var, str(zoo))
    assert parse_model_ref("zoo:mlp").path == tmp_path / "images" / "mlp.safetensors"
    assert parse_model_ref("zoo:lm").path == tmp_path / "text" / "lm.safetensors"
    with pytest.raises(MalError, match=r"zoo:nope: no model named 'nope' in the demo zoo or "
                                       r"the language zoo .*mal zoo list --language"):
        parse_model_ref("zoo:nope")


def test_zoo_and_memory_references(files, tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(files["a"], zoo / "m.safetensors")
    (zoo / "zoo.json").write_text(json.dumps({"version": 1, "entries": [{
        "name": "m", "path": "m.safetensors", "family": "mlp", "config": {}, "dataset": "x",
        "seed": 0, "test_accuracy": 0.5}]}))
    ref = parse_model_ref("zoo:m", zoo)
    assert ref.kind == "zoo"
    assert ref.content_hash() == parse_model_ref(str(files["a"])).content_hash()
    with pytest.raises(MalError, match="no model named 'nope'"):
        parse_model_ref("zoo:nope", zoo)
    model = load_model(files["a"])
    mem = memory_ref("current", model)
    changed = memory_ref("current", model.with_state(
        {k: v + 1 if v.is_floating_point() else v for k, v in model.state().items()}))
    assert mem.content_hash() == memory_ref("again", load_model(files["a"])).content_hash()
    assert mem.content_hash() != changed.content_hash()
    result = run_job(eval_matrix_job([mem], [str(files["d1"])], cache_dir=files["cache"]))
    assert result.models[0]["kind"] == "memory" and result.computed == 1


# -- command line --------------------------------------------------------------------------
def _cli(argv: list[str]) -> tuple[int, str]:
    """`mal ARGV` in-process: (exit code, stdout)."""
    import contextlib

    from mal_desktop.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


def test_cli_eval_matrix_json_and_files(files, tmp_path: Path) -> None:
    argv = ["eval-matrix", "--models", str(files["a"]), str(files["b"]), "--datasets",
            str(files["d1"]), "--metrics", "accuracy", "ece", "--cache", str(files["cache"]),
            "--out", str(tmp_path / "report"), "--json", "--quiet"]
    rc, stdout = _cli(argv)
    doc = json.loads(stdout)
    assert rc == 0 and doc["computed"] == 2 and doc["metrics"] == ["accuracy", "ece"]
    assert json.loads((tmp_path / "report" / "matrix.json").read_text())["cells"] == doc["cells"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report" / "matrix.csv").read_text())))
    assert [r["model"] for r in rows] == [str(files["a"]), str(files["b"])]
    rc, stdout = _cli(argv[:-2] + ["--quiet"])  # text output, everything cached now
    assert rc == 0 and "0 computed, 2 from the cache" in stdout and "ece" in stdout
    assert stdout.count("from the cache") == 1  # once, not under each metric's table


def test_cli_eval_matrix_fails_on_an_error_cell(files, tmp_path: Path, capsys) -> None:
    wide = _mlp(tmp_path / "wide.safetensors", 3, input_shape=(1, 5, 5))
    rc, _ = _cli(["eval-matrix", "--models", str(wide), "--datasets", str(files["d1"]),
                  "--cache", str(files["cache"]), "--quiet"])
    assert rc == 1
    assert "mal: error:" in capsys.readouterr().err


def test_bfloat16_models_in_memory_hash_without_error(small_zoo):
    from mal_desktop.core.toolkit.model_refs import memory_ref
    from mal_desktop.core.io.files import load_model

    model = load_model(small_zoo.path_of("mlp-w32-s0"))
    model.module.to(torch.bfloat16)
    first = memory_ref("bf16", model).content_hash()
    assert first == memory_ref("bf16", model).content_hash()
    with torch.no_grad():
        model.module.head.bias.add_(1.0)
    assert memory_ref("bf16", model).content_hash() != first


def test_a_kind_registered_later_is_reached_before_the_file_fallback(files) -> None:
    # The built-in "file" kind claims any text (a missing file is its error), so a kind
    # registered after it must still be tried first, or it could never match.
    @dataclass
    class AliasRef(FileRef):
        kind = "alias"

    def alias(text: str, zoo_dir, arch) -> AliasRef | None:
        if not text.startswith("alias:"):
            return None
        return AliasRef(text, "a", path=files["a"])

    register_model_kind("alias", alias)
    try:
        assert list(MODEL_KINDS)[-1] == "file"
        ref = parse_model_ref("alias:first")
        assert isinstance(ref, AliasRef) and ref.kind == "alias"
        result = _run(["alias:first"], [files["d1"]], files["cache"])
        assert result.cells[0].error is None and result.models[0]["kind"] == "alias"
        with pytest.raises(ModelFileError):  # other texts still end at the file kind
            parse_model_ref("no-such-model.safetensors")
    finally:
        MODEL_KINDS.pop("alias", None)


def test_text_for_an_image_model_is_not_applicable_not_a_failure(files, capsys) -> None:
    """Ticking the language data set beside image models filled the matrix with 'error' cells
    and '2 failed'; the cells do not apply, and nothing failed."""
    result = _run([files["a"]], [files["d1"], "python-code"], files["cache"])
    text = result.cell(str(files["a"]), "python-code")
    assert text.mismatch and "reads images or features, not token ids" in text.error
    assert text.to_json()["not_applicable"] is True and text.metrics == {}
    assert result.errors == [] and len(result.not_applicable) == 1
    assert not result.cell(str(files["a"]), str(files["d1"])).mismatch
    rc, stdout = _cli(["eval-matrix", "--models", str(files["a"]), "--datasets",
                       str(files["d1"]), "python-code", "--cache", str(files["cache"]),
                       "--quiet"])
    assert rc == 0 and "n/a" in stdout.splitlines()[1]
    assert "mal: note: not applicable: " in capsys.readouterr().err


def test_csv_lists_class_columns_in_class_order() -> None:
    """The per-class columns were the union over cells in meeting order ('1', '10', '2')."""
    from mal_desktop.core.toolkit.matrix import MatrixResult

    cells = tuple(MatrixCell(m, "d", m, {"per_class_accuracy": {t: 0.5 for t in tags}}, {}, 4)
                  for m, tags in (("a", ("1", "10")), ("b", ("2", "0", "cat"))))
    result = MatrixResult(({"ref": "a", "hash": "h"}, {"ref": "b", "hash": "h"}),
                          ({"name": "d", "fingerprint": "f"},), ("per_class_accuracy",), cells,
                          0, 2, Path("/nowhere"), "p")
    header = result.to_csv().splitlines()[0].split(",")
    assert [c for c in header if c.startswith("per_class")] == [
        f"per_class_accuracy[{t}]" for t in ("0", "1", "2", "10", "cat")]
