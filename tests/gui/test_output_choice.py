"""Choosing which output of a multi-output model is the logits, in the app: the combo above the
layer tree, the reload in the worker, undo, Run, Evaluate and the .malproj (issue 8)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mal_desktop.core.evaluate.datasets import load_dataset  # noqa: E402
from mal_desktop.core.merge.plan import AssemblyStep  # noqa: E402
from mal_desktop.core.project.document import load_project  # noqa: E402
from mal_desktop.gui.controllers.files import FilesController  # noqa: E402
from mal_desktop.gui.controllers.run import RunController  # noqa: E402
from mal_desktop.gui.controllers.session import SessionController  # noqa: E402
from mal_desktop.gui.job_queue import JobQueue  # noqa: E402
from mal_desktop.gui.settings import Settings  # noqa: E402
from mal_desktop.gui.views.layer_tree_view import LayerTreePane  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))  # tests/core is not a package
import idiom_modules as im  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def programs(tmp_path: Path) -> dict[str, tuple[Path, torch.nn.Module]]:
    """A base and a zoo model, each a two-output module exported to .pt2 (dynamic batch)."""
    out = {}
    for seed, name in enumerate(("base", "zoo")):
        torch.manual_seed(seed)
        module = im.TwoOutputs().eval()
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(module, (torch.randn(4, 1, 8, 8),),
                                      dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp_path / f"{name}.pt2"))
        out[name] = (tmp_path / f"{name}.pt2", module)
    return out


def _loss(module: torch.nn.Module, output: int) -> float:
    data = load_dataset("digits")
    with torch.no_grad():
        logits = module(data.x_test.reshape(-1, 1, 8, 8).float())[output]
    return float(F.cross_entropy(logits, data.y_test.long()))


def _pick(qtbot, pane: LayerTreePane, jobs: JobQueue, index: int) -> None:
    """Choose output ``index`` in the pane's combo as a user does, and wait for the reload."""
    combo = pane.output_choice.combo
    with qtbot.waitSignal(jobs.jobEnded, timeout=60000):
        combo.setCurrentIndex(index)
        combo.activated.emit(index)


def _open_base(qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
               path: Path) -> tuple[FilesController, LayerTreePane]:
    """Open ``path`` as the base through the files controller; its layer tree pane."""
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(path)])
    pane = LayerTreePane(session.workspace, "base")
    qtbot.addWidget(pane)
    return files, pane


def _evaluate_on_digits(qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
                        path: Path, cache: Path):
    """Evaluate ``path`` on digits from the Evaluate panel, as the app does: (panel, cell)."""
    from mal_desktop.gui.controllers.evaluation import EvaluationController
    from mal_desktop.gui.views.evaluate_panel import EvaluatePanel

    panel = EvaluatePanel(session.workspace, cache_dir=cache)
    qtbot.addWidget(panel)
    evaluation = EvaluationController(jobs, settings)
    evaluation.set_panel(panel)
    panel.set_checked([str(path), "data:digits"])
    with qtbot.waitSignal(jobs.jobEnded, timeout=60000):
        evaluation.evaluate()
    (cell,) = panel.model.finished_cells()
    return panel, cell


def test_choosing_output_1_changes_the_curve_and_survives_undo_and_reopening(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        programs: dict[str, tuple[Path, torch.nn.Module]], tmp_path: Path) -> None:
    files = FilesController(session, jobs, settings)
    runs = RunController(session, jobs)
    messages: list[str] = []
    files.message.connect(lambda text, _ms: messages.append(text))
    (base, base_module), (zoo, _) = programs["base"], programs["zoo"]
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(base), str(zoo)])
    ws = session.workspace
    base_pane = LayerTreePane(ws, "base")
    zoo_pane = LayerTreePane(ws, "zoo", "zoo")
    qtbot.addWidget(base_pane)
    qtbot.addWidget(zoo_pane)

    # Loaded with the first output, and the app says so: in the status bar and by the combo.
    choice = base_pane.output_choice
    assert not choice.isHidden() and choice.combo.count() == 2
    assert [choice.combo.itemText(i) for i in range(2)] == ["output 0 \u00b7 (batch, 10)",
                                                            "output 1 \u00b7 (batch, 12)"]
    assert choice.combo.currentIndex() == 0 and "output 0 is used until you choose" in \
        choice.note.text()
    assert "returns 2 outputs; output 0 is used as the logits" in messages[-1]
    assert ws.plan.base_output is None and ws.plan.zoo_outputs == {}

    assert ws.add_step(AssemblyStep("zoo", "fc1", "fc1")).ok
    session.set_grid(3)
    with qtbot.waitSignal(runs.runFinished, timeout=60000) as first:
        runs.run()
    assert first.args[0].curve.naive.loss[0] == pytest.approx(_loss(base_module, 0), rel=1e-5)

    # Output 1 as the logits of both models: reloaded in the worker, one undo command each.
    _pick(qtbot, base_pane, jobs, 1)
    _pick(qtbot, zoo_pane, jobs, 1)
    assert (ws.base.output_index, ws.base.model.num_classes) == (1, 12)
    assert ws.zoo["zoo"].output_index == 1
    assert (ws.plan.base_output, ws.plan.zoo_outputs) == (1, {"zoo": 1})
    assert choice.combo.currentIndex() == 1 and choice.note.text() == ""
    assert ws.undo_stack.undoText() == "Use output 1 of zoo as its logits"
    assert session.is_dirty()
    found = runs.results.lookup(ws.plan.steps, 0, "digits")  # a curve of output 0: stale now
    assert found.record is not None and not found.fresh
    with qtbot.waitSignal(runs.runFinished, timeout=60000) as second:
        runs.run()
    naive = second.args[0].curve.naive.loss
    assert runs.results.lookup(ws.plan.steps, 0, "digits").fresh
    assert naive[0] == pytest.approx(_loss(base_module, 1), rel=1e-5)
    assert naive[0] != pytest.approx(first.args[0].curve.naive.loss[0], rel=1e-3)

    # Undo puts the first output back (no reload), redo the chosen one.
    ws.undo_stack.undo()
    ws.undo_stack.undo()
    assert ws.base.output_index == 0 and choice.combo.currentIndex() == 0
    assert ws.plan.base_output is None and ws.plan.zoo_outputs == {}
    ws.undo_stack.redo()
    ws.undo_stack.redo()
    assert ws.base.output_index == 1 and (ws.plan.base_output, ws.plan.zoo_outputs) == (
        1, {"zoo": 1})

    # Saved in the project, and back after reopening it.
    project_file = tmp_path / "outputs.malproj"
    assert files.write_project(project_file)
    doc = json.loads(project_file.read_text())
    assert (doc["base_output"], doc["zoo_outputs"]) == (1, {"zoo": 1})
    assert load_project(project_file).plan.base_output == 1
    with qtbot.waitSignal(files.projectOpened, timeout=60000):
        files.open_project(project_file)
    assert not session.is_dirty()
    assert (ws.base.output_index, ws.base.output_choice, ws.zoo["zoo"].output_index) == (1, 1, 1)
    assert (ws.plan.base_output, ws.plan.zoo_outputs) == (1, {"zoo": 1})
    assert choice.combo.currentIndex() == 1
    with qtbot.waitSignal(runs.runFinished, timeout=60000) as third:
        runs.run()
    assert third.args[0].curve.naive.loss[0] == pytest.approx(naive[0], rel=1e-6)


def test_evaluate_scores_the_chosen_output(qtbot, session: SessionController, jobs: JobQueue,
                                           settings: Settings,
                                           programs: dict[str, tuple[Path, torch.nn.Module]],
                                           tmp_path: Path) -> None:
    base, module = programs["base"]
    _, pane = _open_base(qtbot, session, jobs, settings, base)
    ws = session.workspace
    _pick(qtbot, pane, jobs, 1)
    panel, cell = _evaluate_on_digits(qtbot, session, jobs, settings, base, tmp_path / "cache")
    assert cell.metrics["loss"] == pytest.approx(_loss(module, 1), rel=1e-5)
    assert not panel.model.stale_reason(0)
    ws.undo_stack.undo()  # back to output 0: the cell measured another output
    assert "another output" in panel.model.stale_reason(0)


def test_a_pick_that_cannot_load_puts_the_shown_choice_back(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        programs: dict[str, tuple[Path, torch.nn.Module]]) -> None:
    base, _ = programs["base"]
    _, pane = _open_base(qtbot, session, jobs, settings, base)
    ws = session.workspace
    base.write_bytes(b"not a program any more")  # the file changed since it was opened
    _pick(qtbot, pane, jobs, 1)
    assert ws.base.output_index == 0 and pane.output_choice.combo.currentIndex() == 0
    assert ws.undo_stack.count() == 0 and ws.plan.base_output is None


def test_evaluate_scores_output_0_when_chosen_over_the_one_a_merged_file_recorded(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        programs: dict[str, tuple[Path, torch.nn.Module]], tmp_path: Path) -> None:
    """A merged file records its base's output (1 here) and opens with it; choosing output 0
    must be what Evaluate scores, not the recorded one (output 0 was left out of the outputs
    Evaluate passes on, as if it were every file's default)."""
    from mal_desktop.core.io.files import load_model, save_model

    base, module = programs["base"]
    merged = save_model(load_model(base, output=1), tmp_path / "merged.safetensors",
                        metadata={"output_index": 1})
    _, pane = _open_base(qtbot, session, jobs, settings, merged)
    ws = session.workspace
    assert ws.base.output_index == 1  # what the file recorded
    _pick(qtbot, pane, jobs, 0)
    assert (ws.base.output_index, ws.plan.base_output) == (0, 0)
    _, cell = _evaluate_on_digits(qtbot, session, jobs, settings, merged, tmp_path / "cache")
    assert cell.metrics["loss"] == pytest.approx(_loss(module, 0), rel=1e-5)


def test_undoing_a_choice_leaves_a_base_of_the_same_name_from_another_file_alone(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        programs: dict[str, tuple[Path, torch.nn.Module]], tmp_path: Path) -> None:
    """Undo of "use output 1" once another file of the same name became the base: the command
    found the model by name only and swapped the old file back in as the base."""
    import shutil

    from mal_desktop.gui import tasks

    base, _ = programs["base"]
    files, pane = _open_base(qtbot, session, jobs, settings, base)
    ws = session.workspace
    _pick(qtbot, pane, jobs, 1)
    other = tmp_path / "other" / base.name
    other.parent.mkdir()
    shutil.copy(programs["zoo"][0], other)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):  # File > Open Base Model
        files.load_models([tasks.LoadRequest("base", "base", str(other))])
    assert ws.base.path_text == str(other) and ws.base.name == "base"
    ws.undo_stack.undo()
    assert ws.base.path_text == str(other) and ws.plan.base == str(other)
    ws.undo_stack.redo()
    assert ws.base.path_text == str(other) and ws.plan.base == str(other)
