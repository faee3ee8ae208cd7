"""The window's controllers, each built and exercised without a MainWindow (gui/controllers,
gui/job_queue.py): real jobs on tiny models written to ``tmp_path``."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from layer_fixtures import entry  # noqa: E402

from mal_desktop.core.merge.plan import AssemblyStep  # noqa: E402
from mal_desktop.core.progress import CancelToken, ProgressEvent  # noqa: E402
from mal_desktop.core.project.document import load_project  # noqa: E402
from mal_desktop.gui import tasks  # noqa: E402
from mal_desktop.gui.controllers.evaluation import EvaluationController  # noqa: E402
from mal_desktop.gui.controllers.files import FilesController  # noqa: E402
from mal_desktop.gui.controllers.run import RunController  # noqa: E402
from mal_desktop.gui.controllers.session import SessionController  # noqa: E402
from mal_desktop.gui.job_queue import JobQueue  # noqa: E402
from mal_desktop.gui.settings import Settings  # noqa: E402
from mal_desktop.gui.undo import UpdateStepCommand  # noqa: E402

pytestmark = pytest.mark.gui


def _step_job(label: str, log: list[str], gate: threading.Event | None = None):
    def factory(cancel: CancelToken):
        log.append(f"start {label}")
        while gate is not None and not gate.wait(0.005):
            cancel.raise_if_cancelled()
            yield ProgressEvent("wait", float("nan"), label)
        yield ProgressEvent("step", 1.0, label)
        return label
    return factory


def test_job_queue_runs_in_order_and_cancel_drops_what_waits(qtbot, jobs: JobQueue) -> None:
    log: list[str] = []
    done: list[str] = []
    stopped: list[str] = []
    messages: list[str] = []
    jobs.message.connect(lambda text, _ms: messages.append(text))
    gate = threading.Event()
    jobs.submit(_step_job("a", log, gate), "A", done.append, lambda: stopped.append("a"))
    jobs.submit(_step_job("b", log), "B", done.append, lambda: stopped.append("b"))
    assert jobs.is_busy() and messages == ["Queued: B"]
    qtbot.waitUntil(lambda: log == ["start a"], timeout=5000)
    with qtbot.waitSignal(jobs.runner.cancelled, timeout=5000):
        jobs.cancel()
    assert stopped == ["b", "a"] and done == [] and log == ["start a"]  # b never started
    assert "Cancelled: A" in messages and not jobs.is_busy()  # not "Running ... cancelled"
    with qtbot.waitSignal(jobs.jobEnded, timeout=5000):
        jobs.submit(_step_job("c", log), "C", done.append)
    with qtbot.waitSignal(jobs.jobEnded, timeout=5000):
        jobs.submit(_step_job("d", log), "D", done.append)
    assert done == ["c", "d"]


def test_session_controller_tracks_an_added_and_undone_step(qtbot, session: SessionController
                                                             ) -> None:
    ws = session.install_workspace()
    assert session.install_workspace() is ws  # made once
    ws.set_base(entry("base_mlp"))
    ws.add_zoo(entry("zoo_mlp"))
    session.mark_clean()
    step = AssemblyStep("zoo_mlp", "layers.1", "layers.1", 0.25)
    with qtbot.waitSignal(session.stateChanged), qtbot.waitSignal(session.planEdited):
        assert ws.add_step(step).ok
    assert session.is_dirty()
    project, path = session.snapshot()
    assert project.plan.steps == [step] and path is None
    assert project.ui == {"selected_step": 0, "curve_grid": session.grid}
    assert session.autosaver.save_now() and session.autosaver.path.is_file()  # autosaved
    with qtbot.waitSignal(session.stateChanged):
        ws.undo_stack.undo()
    assert not session.is_dirty() and ws.plan.steps == []
    assert session.snapshot()[0].plan.steps == []
    session.set_data("digits-permuted")  # a change outside the undo stack
    assert session.is_dirty() and session.settings.dataset == "digits-permuted"
    session.mark_clean()
    session.set_grid(1000)  # the project keeps its curve's points: quitting must ask
    assert session.grid == 101 and session.settings.curve_grid == 101
    assert session.is_dirty() and session.snapshot()[0].ui["curve_grid"] == 101


def test_one_bad_file_among_several_is_reported_and_the_others_open(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        model_files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """`mal-desktop good bad worse`: the first bad file's dialog came, the good base was
    discarded and the next bad file never tried. Now every file is tried, the good ones open,
    and one message lists each file that did not with its problem."""
    import mal_desktop.gui.controllers.files as files_module

    reported: list[tuple[str, str]] = []
    monkeypatch.setattr(files_module, "report_error",
                        lambda message, details="", title="", parent=None:
                        reported.append((title, message)))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model_files["zoo_mlp"].read_bytes()[:300])
    missing = tmp_path / "gone.safetensors"
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000) as opened:
        files.open_paths([str(model_files["base_mlp"]), str(truncated), str(missing),
                          str(model_files["zoo_mlp"])])
    assert opened.args == [["base_mlp", "zoo_mlp"]]
    ws = session.workspace
    assert ws.base.name == "base_mlp" and list(ws.zoo) == ["zoo_mlp"]
    (title, message), = reported
    assert title == "Cannot open some files"
    lines = message.splitlines()
    assert lines[0] == "Cannot open 2 of 4 files:" and lines[-1] == "The other 2 opened."
    assert lines[1].startswith(str(truncated)) and lines[2].startswith(str(missing))
    assert "Traceback" not in message
    assert str(truncated) not in settings.recent_files
    assert str(model_files["zoo_mlp"]) in settings.recent_files


def test_files_controller_opens_a_model_file_and_reports_it(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        model_files: dict[str, Path], tmp_path: Path) -> None:
    files = FilesController(session, jobs, settings)
    messages: list[str] = []
    files.message.connect(lambda text, _ms: messages.append(text))
    base = model_files["base_mlp"]
    assert files.openable([str(base), "notes.txt", str(tmp_path / "p.malproj")]) == [
        str(base), str(tmp_path / "p.malproj")]
    with qtbot.waitSignal(files.modelsOpened, timeout=60000) as opened:
        files.open_paths([str(base), str(model_files["zoo_mlp"])])
    assert opened.args == [["base_mlp", "zoo_mlp"]]
    ws = session.workspace
    assert ws.base.name == "base_mlp" and list(ws.zoo) == ["zoo_mlp"]
    assert Path(ws.base.path_text) == base
    assert messages[-1] == "Opened base_mlp, zoo_mlp"
    assert str(base) in settings.recent_files and session.is_dirty()

    # Save, change, and open the project again: the saved session comes back, clean.
    assert ws.add_step(AssemblyStep("zoo_mlp", "layers.1", "layers.1")).ok
    project_file = tmp_path / "p.malproj"
    assert files.write_project(project_file)
    assert session.project_path == project_file.resolve() and not session.is_dirty()
    assert load_project(project_file).plan.steps == ws.plan.steps
    ws.undo_stack.undo()
    session.mark_clean()
    with qtbot.waitSignal(files.projectOpened, timeout=60000):
        files.open_project(project_file)
    assert [s.source_layer for s in ws.plan.steps] == ["layers.1"] and not session.is_dirty()
    assert messages[-1] == "Opened p.malproj"
    # a project whose step cannot run says so as it opens, not only once Run reaches it
    doc = json.loads(project_file.read_text())
    doc["steps"][0]["base_layer"] = "layers.7"
    project_file.write_text(json.dumps(doc))
    with qtbot.waitSignal(files.projectOpened, timeout=60000):
        files.open_project(project_file)
    assert messages[-1].startswith("Opened p.malproj; step 1 cannot run: ")
    assert "layers.7" in messages[-1]


def test_a_project_that_cannot_open_says_why_before_asking_to_save(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        model_files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """Opening a broken project first asked whether to save or discard the work at hand, then
    failed; a project naming a model file that is gone said only "<file>: no such file". The
    file is now checked first (no question), and the message names the project and which of
    its models is missing."""
    from mal_desktop.gui.controllers import files as files_module

    files = FilesController(session, jobs, settings)
    errors: list[str] = []
    monkeypatch.setattr(files_module, "report_exception",
                        lambda exc, *_a, **_k: errors.append(str(exc)))
    asked: list[bool] = []
    monkeypatch.setattr(files, "maybe_save", lambda: asked.append(True) or True)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(model_files["base_mlp"]), str(model_files["zoo_mlp"])])
    ws = session.workspace
    assert ws.add_step(AssemblyStep("zoo_mlp", "layers.1", "layers.1")).ok
    project = tmp_path / "work.malproj"
    assert files.write_project(project)
    gone = tmp_path / "moved.safetensors"
    doc = json.loads(project.read_text())
    doc["zoo"]["zoo_mlp"] = str(gone)
    broken = tmp_path / "broken.malproj"
    broken.write_text(json.dumps(doc))
    (tmp_path / "bad.malproj").write_text("{ not json")
    ws.push(UpdateStepCommand(ws.plan, 0, {"lam": 0.9}))  # unsaved work
    for path in (tmp_path / "bad.malproj", broken):
        files.open_project(path)
    assert not asked and not jobs.is_busy()
    assert errors[0].startswith(str(tmp_path / "bad.malproj"))
    assert errors[1].startswith(str(broken)) and "zoo model 'zoo_mlp'" in errors[1]
    assert str(gone) in errors[1] and "no such file" in errors[1]
    assert ws.plan.steps[0].lam == 0.9 and session.is_dirty()  # the work at hand is untouched
    with qtbot.waitSignal(files.projectOpened, timeout=60000):
        files.open_project(project)  # a project that opens asks first
    assert asked == [True]


def test_run_controller_runs_the_selected_step(qtbot, session: SessionController,
                                               jobs: JobQueue, settings: Settings,
                                               model_files: dict[str, Path]) -> None:
    files = FilesController(session, jobs, settings)
    runs = RunController(session, jobs)
    messages: list[str] = []
    runs.message.connect(lambda text, _ms: messages.append(text))
    runs.run()
    assert messages[0].startswith("Run needs a base model and at least one step")
    assert not jobs.is_busy()
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(model_files["base_mlp"]), str(model_files["zoo_mlp"])])
    ws = session.workspace
    assert ws.add_step(AssemblyStep("zoo_mlp", "layers.1", "layers.1")).ok
    session.set_grid(3)
    with qtbot.waitSignal(runs.runStarted) as started, \
            qtbot.waitSignal(runs.runFinished, timeout=60000) as finished:
        runs.run()
    assert started.args == [0] and runs.live is None  # the live curve ended with the run
    result = finished.args[0]
    assert isinstance(result, tasks.RunResult) and runs.last_run is result
    assert result.step_index == 0 and len(result.curve.lambdas) == 3
    assert messages[-1].startswith("Run finished in")
    # The results are kept for the step of the plan that ran: curve and diagnostics.
    found = runs.results.lookup(ws.plan.steps, 0, "digits")
    assert found.fresh and found.record.curve == result.curve
    assert found.record.diagnostics is not None and found.record.diagnostics.index == 0
    session.forget_results()
    assert runs.last_run is None and len(runs.results) == 0
    # a step that cannot run (a project naming a layer the base lacks) stops Run before it
    # starts, and says which and why (it used to fail only once the run reached it)
    from mal_desktop.gui.undo import AddStepCommand

    ws.push(AddStepCommand(ws.plan, AssemblyStep("zoo_mlp", "layers.1", "layers.7")))
    assert runs.why_not_run().startswith("Step 2 cannot run: ")
    assert "layers.7" in runs.why_not_run() and not runs.can_run()
    runs.run()
    assert messages[-1] == runs.why_not_run() and not jobs.is_busy()


def test_evaluation_controller_fills_its_panel(qtbot, session: SessionController,
                                               jobs: JobQueue, settings: Settings,
                                               model_files: dict[str, Path],
                                               tmp_path: Path) -> None:
    from mal_desktop.gui.views.evaluate_panel import EvaluatePanel

    evaluation = EvaluationController(jobs, settings)
    evaluation.evaluate()  # no panel yet: nothing to evaluate, nothing queued
    assert not jobs.is_busy()
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(model_files["base_mlp"])])
    panel = EvaluatePanel(session.workspace, cache_dir=tmp_path / "cache")
    qtbot.addWidget(panel)
    evaluation.set_panel(panel)
    panel.set_checked([str(model_files["base_mlp"]), "data:digits"])
    cells: list[object] = []
    jobs.progress.connect(lambda e: cells.append(e.payload)
                          if type(e.payload).__name__ == "MatrixCell" else None)
    with qtbot.waitSignal(evaluation.panelWanted), \
            qtbot.waitSignal(jobs.jobEnded, timeout=60000):
        evaluation.evaluate()
    result = panel.model.result
    assert result is not None and (result.computed, result.cached) == (1, 0)
    assert len(cells) == 1 and panel.model.finished_cells() == cells  # filled live
    panel.set_checked([])
    messages: list[str] = []
    evaluation.message.connect(lambda text, _ms: messages.append(text))
    evaluation.evaluate()
    assert messages == ["Evaluate needs at least one model and one data set ticked"]
