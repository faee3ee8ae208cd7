"""The main window: start-up, title and closing, dialogs, drops, an end-to-end run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox

from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.core.progress import CancelToken, ProgressEvent
from mal_desktop.gui import theme as theme_mod
from mal_desktop.gui.dialogs import ask
from mal_desktop.gui.dialogs.about import AboutDialog
from mal_desktop.gui.dialogs.demo_zoo import DemoZooDialog
from mal_desktop.gui.log import report_error
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.core.project.document import Project, load_project
from mal_desktop.core.project.recovery import recovery_path, write_recovery
from mal_desktop.gui.settings import Settings
from mal_desktop.gui.undo import AddStepCommand
from mal_desktop.gui.workers import JobRunner
from mal_desktop.gui.workspace import ModelEntry
from window_helpers import dispose

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]


class Asked:
    """Records the questions a test allowed, and answers them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answers: dict[str, object] = {}

    def __call__(self, name: str):
        def answer(*_args: object) -> object:
            self.calls.append(name)
            if name not in self.answers:
                raise AssertionError(f"unexpected question: {name}")
            return self.answers[name]
        return answer


@pytest.fixture
def asked(monkeypatch) -> Asked:
    a = Asked()
    for name in ("unsaved_changes", "stop_running_job", "offer_recovery"):
        monkeypatch.setattr(ask, name, a(name))
    return a


@pytest.fixture
def window(qtbot, settings: Settings, asked: Asked) -> Iterator[MainWindow]:
    settings.demo_offered = True  # no first-launch offer in tests unless asked for
    w = MainWindow(settings)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.session.mark_clean()  # nothing to ask about when the fixture closes the window
    asked.answers.setdefault("stop_running_job", True)
    dispose(w)


def ready(qtbot, w: MainWindow) -> MainWindow:
    w.start_up()
    qtbot.waitUntil(lambda: w.workspace is not None and not w.jobs.runner.is_running(), timeout=60000)
    return w


def test_version_and_window_without_heavy_imports(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "mal_desktop", "--version"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "mal-desktop 0.1.0"
    out = subprocess.run([sys.executable, "-m", "mal_desktop", "--startup-probe", "--settings",
                          str(tmp_path / "s.ini")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "heavy_modules_loaded=none" in out.stdout  # torch/scipy/pyqtgraph come later
    # The probe reports when the window was on screen. How fast that is is a benchmark's
    # question (a loaded CI machine is no measure), not this test's.
    ms = int(out.stdout.split("time_to_window_ms=")[1].split()[0])
    assert ms > 0
    assert (tmp_path / "data" / "logs" / "mal-desktop.log").is_file()


def test_window_starts_engine_and_closes_without_leaking_threads(qtbot, window: MainWindow) -> None:
    assert window.windowTitle() == "Untitled \u2014 MAL Desktop"
    assert window.central.currentWidget() is window.welcome
    ready(qtbot, window)
    assert window.device_label.text() in ("Device: CPU",) or "CUDA" in window.device_label.text()
    assert window.dataset_combo.findData("digits") >= 0
    assert window.views.curve_plot is not None and window.views.assembly_panel is not None
    thread = window.jobs.runner._thread
    assert thread is not None and thread.isRunning()
    assert window.close()
    assert thread.isFinished() and window.jobs.runner._thread is None
    # Layout was stored for the next start.
    assert not window.settings.window_state.isEmpty()
    assert not window.settings.window_geometry.isEmpty()


def test_save_project_waits_for_a_base_model(qtbot, window: MainWindow, tmp_path: Path) -> None:
    """Save Project was offered in an empty, untitled session; a project with no base cannot
    be opened again. It is enabled once a base is open, and says why until then."""
    ready(qtbot, window)
    a = window.actions
    assert not a.save_project.isEnabled() and not a.save_project_as.isEnabled()
    assert "Open a base model first" in a.save_project.toolTip()
    assert a.new_project.isEnabled()
    base, _ = _tiny_model_files(tmp_path)
    window.files.open_paths([str(base)])
    qtbot.waitUntil(lambda: window.workspace.base is not None and not window.jobs.is_busy(),
                    timeout=60000)
    assert a.save_project.isEnabled() and a.save_project_as.isEnabled()
    assert "Open a base model" not in a.save_project.toolTip()


def test_title_star_follows_the_undo_stack(qtbot, window: MainWindow) -> None:
    window.install_views()
    ws = window.workspace
    assert not window.windowTitle().startswith("*")
    ws.push(AddStepCommand(ws.plan, AssemblyStep("a", "layers.0", "layers.0")))
    assert window.windowTitle().startswith("*Untitled")
    ws.undo_stack.undo()
    assert not window.windowTitle().startswith("*")
    ws.undo_stack.redo()
    assert window.windowTitle().startswith("*")


def _tiny_model_files(folder: Path) -> tuple[Path, Path]:
    """A base and a zoo model saved as files (the GUI's layer-fixture MLPs)."""
    from layer_fixtures import loaded

    from mal_desktop.core.io.files import save_model

    return (save_model(loaded("base_mlp"), folder / "base.safetensors"),
            save_model(loaded("zoo_mlp"), folder / "a.safetensors"))


def test_close_with_unsaved_changes_asks(qtbot, window: MainWindow, asked: Asked,
                                         tmp_path: Path) -> None:
    window.install_views()
    ws = window.workspace
    from mal_desktop.core.io.files import load_model

    # Models come in through the workspace (as the loader's callback does), then one step.
    base_file, zoo_file = _tiny_model_files(tmp_path)
    ws.set_base(ModelEntry.from_model(load_model(base_file)))
    ws.add_zoo(ModelEntry.from_model(load_model(zoo_file), "a"))
    step = AssemblyStep("a", "layers.0", "layers.0")
    assert ws.check_plan_step(step).ok
    ws.push(AddStepCommand(ws.plan, step))
    window.session.autosaver.save_now()
    assert window.session.autosaver.path.is_file()

    asked.answers["unsaved_changes"] = ask.CANCEL
    assert not window.close()
    assert window.isVisible() and asked.calls == ["unsaved_changes"]

    window.session.project_path = tmp_path / "kept.malproj"
    asked.answers["unsaved_changes"] = ask.SAVE
    assert window.close()
    assert asked.calls == ["unsaved_changes", "unsaved_changes"]
    saved = load_project(tmp_path / "kept.malproj")
    assert saved.plan.steps == [step]
    assert saved.plan.base == str(base_file.resolve())
    assert saved.plan.zoo == {"a": str(zoo_file.resolve())}
    assert not window.session.autosaver.path.exists()  # the user decided: no recovery file left


def test_close_with_a_running_job_asks_and_cancels(qtbot, window: MainWindow,
                                                   asked: Asked) -> None:
    stopped = threading.Event()

    def endless(cancel: CancelToken):
        try:
            while True:
                cancel.raise_if_cancelled()
                yield ProgressEvent("spin", float("nan"), "spinning")
                stopped.wait(0.005)
        finally:
            stopped.set()

    window.jobs.submit(endless, "Spinning", lambda result: None)
    # It runs (not only queued in the worker's event loop):
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "spinning", timeout=2000)
    assert window.progress_bar.isVisible() and window.cancel_button.isVisible()
    asked.answers["stop_running_job"] = False
    assert not window.close()
    assert window.jobs.runner.is_running() and not stopped.is_set()
    asked.answers["stop_running_job"] = True
    thread = window.jobs.runner._thread
    assert window.close()
    assert stopped.is_set() and thread.isFinished()


def test_escape_cancels_the_running_job(qtbot, window: MainWindow) -> None:
    def endless(cancel: CancelToken):
        while True:
            cancel.raise_if_cancelled()
            yield ProgressEvent("spin", 0.5, "spinning")
            threading.Event().wait(0.005)

    window.jobs.submit(endless, "Spinning", lambda result: None)
    qtbot.waitUntil(lambda: window.actions.cancel.isEnabled(), timeout=2000)
    with qtbot.waitSignal(window.jobs.runner.cancelled, timeout=3000):
        qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert not window.progress_bar.isVisible()


def test_errors_are_readable_with_details_collapsed(qtbot, window: MainWindow) -> None:
    report_error("model.safetensors: the file is truncated", "Traceback (most recent call last):"
                 "\n  ...\nOSError: short read", parent=window)
    boxes = [b for b in window.findChildren(QMessageBox) if b.objectName() == "errorBox"]
    assert len(boxes) == 1
    box = boxes[0]
    assert box.text() == "model.safetensors: the file is truncated"
    assert "Traceback" not in box.text() and "OSError: short read" in box.detailedText()
    box.close()


def test_failed_job_reaches_the_error_dialog(qtbot, window: MainWindow) -> None:
    def bad(cancel: CancelToken):
        yield ProgressEvent("x", 0.1)
        raise ValueError("boom")

    window.jobs.submit(bad, "Bad job", lambda result: None)
    qtbot.waitUntil(lambda: any(b.objectName() == "errorBox"
                                for b in window.findChildren(QMessageBox)), timeout=5000)
    box = next(b for b in window.findChildren(QMessageBox) if b.objectName() == "errorBox")
    assert box.windowTitle() == "Bad job failed"
    assert "ValueError" in box.text() and "boom" in box.detailedText()
    box.close()


def _drop_event(cls, files: list[Path]):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    if cls is QDropEvent:
        return QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                          Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier), mime
    return QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                           Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier), mime


def test_dropping_model_files_opens_them(qtbot, window: MainWindow, monkeypatch,
                                         tmp_path: Path) -> None:
    opened: list[list[str]] = []
    monkeypatch.setattr(window.files, "open_paths", lambda paths: opened.append(list(paths)))
    good = [tmp_path / "a.safetensors", tmp_path / "b.pt2"]
    enter, _m1 = _drop_event(QDragEnterEvent, good)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    other, _m2 = _drop_event(QDragEnterEvent, [tmp_path / "notes.txt"])
    window.dragEnterEvent(other)
    assert not other.isAccepted()
    drop, _m3 = _drop_event(QDropEvent, good + [tmp_path / "notes.txt"])
    window.dropEvent(drop)
    assert opened == [[str(good[0]), str(good[1])]]


def test_about_dialog_and_theme(qtbot, window: MainWindow) -> None:
    about = AboutDialog(window, "CPU", window.settings.file_name)
    qtbot.addWidget(about)
    texts = " ".join(label.text() for label in about.findChildren(QLabel))
    assert "Version 0.1.0" in texts and "CPU" in texts and window.settings.file_name in texts
    app = QApplication.instance()
    original = app.palette()
    controller = theme_mod.ThemeController(app, "dark")
    try:
        assert theme_mod.is_dark()
        assert app.palette().color(QPalette.ColorRole.Window).lightness() < 100
        dark_plot = theme_mod.plot_colors()
        controller.apply("light")
        assert not theme_mod.is_dark()
        assert app.palette().color(QPalette.ColorRole.Window).lightness() > 150
        assert theme_mod.plot_colors() != dark_plot
    finally:
        controller.apply("light")
        app.setPalette(original)


def test_demo_dialog_follows_the_build_job(qtbot, tmp_path: Path) -> None:
    runner = JobRunner()
    dialog = DemoZooDialog(None, tmp_path, ready=False)
    qtbot.addWidget(dialog)
    dialog.show()
    # the first launch's offer also says where the language models are (it offered digits only)
    assert "--demo language" in dialog._text.text() and "Language Demo Zoo" in dialog._text.text()
    with qtbot.waitSignal(dialog.accepted_build):
        dialog._go.click()

    def build(cancel: CancelToken):
        for i in range(5):
            cancel.raise_if_cancelled()
            yield ProgressEvent("zoo", (i + 1) / 5, f"training model {i + 1}")
            threading.Event().wait(0.02)
        return "index"

    runner.start(build, "Building the demo zoo")
    dialog.attach(runner)
    assert dialog.progress_bar.isVisible()
    with qtbot.waitSignal(dialog.finished, timeout=5000):
        pass
    assert dialog.progress_bar.value() == 1000
    runner.shutdown()


def test_recovery_offered_after_a_crash(qtbot, window: MainWindow, asked: Asked) -> None:
    data_dir = window.settings.data_dir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    crashed = recovery_path(data_dir, proc.pid)
    write_recovery(data_dir, Project(), None).rename(crashed)
    asked.answers["offer_recovery"] = ask.LATER
    assert not window.files.check_recovery()
    assert crashed.exists()  # asked again next time
    asked.answers["offer_recovery"] = ask.DISCARD
    assert not window.files.check_recovery()
    assert not crashed.exists() and asked.calls == ["offer_recovery", "offer_recovery"]


# -- end to end on real (tiny) models ------------------------------------------------------------
def test_open_run_save_export_and_reopen(qtbot, window: MainWindow, small_zoo, tmp_path: Path,
                                         asked: Asked, settings: Settings) -> None:
    ready(qtbot, window)
    ws = window.workspace
    base, donor = small_zoo.path_of("mlp-w32-s0"), small_zoo.path_of("mlp-w32-s1")
    window.files.open_paths([str(base), str(donor)])
    qtbot.waitUntil(lambda: ws.base is not None and len(ws.zoo) == 1, timeout=30000)
    assert window.central.currentWidget() is window.zoo_tabs
    assert window.zoo_tabs.count() == 1 and "mlp-w32-s0" in window.base_dock.windowTitle()
    assert str(base) in settings.recent_files[1:] + settings.recent_files[:1]
    assert window.windowTitle().startswith("*")  # models opened into an unsaved project

    ws.push(AddStepCommand(ws.plan, AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.5)))
    assert window.actions.run.isEnabled()
    points: list[object] = []
    window.jobs.runner.progress.connect(lambda e: points.append(e.payload) if e.payload else None)
    window.grid_spin.setValue(5)
    window.runs.run()
    qtbot.waitUntil(lambda: window.runs.last_run is not None, timeout=60000)
    run = window.runs.last_run
    assert len(run.curve.lambdas) == 5 and run.step_index == 0
    kinds = {type(p).__name__ for p in points}
    assert {"StepDiagnostics", "CurvePoint"} <= kinds
    assert window.views.diagnostics.current is not None

    project_file = tmp_path / "study.malproj"
    assert window.files.write_project(project_file)
    assert not window.windowTitle().startswith("*") and "study.malproj" in window.windowTitle()

    out = tmp_path / "merged.safetensors"
    window.runs.export_merged(out)
    qtbot.waitUntil(lambda: out.exists() and not window.jobs.runner.is_running(), timeout=60000)
    from mal_desktop.core.io.files import load_model

    merged = load_model(out)
    assert merged.metadata.get("kind") == "assembly"

    # A second window opens the project: same models and plan, nothing unsaved.
    other = MainWindow(settings)
    try:
        ready(qtbot, other)
        other.files.open_project(project_file)
        qtbot.waitUntil(lambda: other.workspace.base is not None and not other.jobs.runner.is_running(),
                        timeout=30000)
        assert other.workspace.plan.steps == ws.plan.steps
        assert set(other.workspace.zoo) == {"mlp-w32-s1"}
        assert not other.session.is_dirty()
    finally:
        dispose(other)

    # Closing a zoo tab removes the model and its steps (one undoable command).
    window.zoo_tabs.tabCloseRequested.emit(0)
    assert ws.zoo == {} and ws.plan.steps == [] and window.windowTitle().startswith("*")
    # New project: asks about the unsaved change, then shows the welcome page again.
    asked.answers["unsaved_changes"] = ask.DISCARD
    window.files.new_project()
    assert ws.base is None and window.central.currentWidget() is window.welcome
    assert window.windowTitle() == "Untitled \u2014 MAL Desktop"


def test_cancelled_export_writes_no_file(qtbot, small_zoo, tmp_path: Path) -> None:
    from mal_desktop.core.jobs import assemble_job
    from mal_desktop.core.merge.plan import AssemblyPlan

    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"d": str(small_zoo.path_of("mlp-w32-s1"))},
                        steps=[AssemblyStep("d", "layers.0", "layers.0"),
                               AssemblyStep("d", "layers.1", "layers.1")])
    out = tmp_path / "out" / "merged.safetensors"
    out.parent.mkdir()
    runner = JobRunner()

    def factory(cancel: CancelToken):
        inner = assemble_job(plan, cancel, out=out)

        def job():
            while True:
                try:
                    event = next(inner)
                except StopIteration as stop:
                    return stop.value
                if event.stage == "align":
                    runner.cancel()  # as if the user pressed Cancel at this moment
                yield event
        return job()

    finished: list[object] = []
    runner.finished.connect(finished.append)
    with qtbot.waitSignal(runner.cancelled, timeout=60000):
        runner.start(factory, "Export")
    assert finished == []
    assert list(out.parent.iterdir()) == []  # neither the file nor a temporary one
    runner.shutdown()


def test_layout_is_restored_by_the_next_window(qtbot, settings: Settings, asked: Asked) -> None:
    settings.demo_offered = True
    first = MainWindow(settings)
    first.show()
    qtbot.waitExposed(first)
    first.resize(701, 503)  # inside the offscreen screen (800 x 800): restore clamps to it
    first.curve_dock.hide()  # a panel the user closed stays closed next time
    first.resizeDocks([first.plan_dock], [180], Qt.Orientation.Horizontal)  # narrower than default
    qtbot.wait(50)
    narrow = first.plan_dock.width()
    assert first.close()
    dispose(first)
    second = MainWindow(settings)
    try:
        second.show()
        qtbot.waitExposed(second)
        assert (second.width(), second.height()) == (701, 503)
        assert not second.curve_dock.isVisible() and second.plan_dock.isVisible()
        qtbot.wait(50)
        assert abs(second.plan_dock.width() - narrow) <= 2
        second.resize(761, 563)  # maximized, snapped: the restored dock keeps its size
        qtbot.wait(50)
        assert second.plan_dock.width() <= narrow + 2
        second.reset_layout()
        assert second.curve_dock.isVisible()
    finally:
        dispose(second)


def test_docks_squeezed_by_a_small_window_grow_back_with_it(qtbot, settings: Settings,
                                                            asked: Asked) -> None:
    """Qt gives a growing window's room to the central widget: the plan dock, squeezed while
    the window was small, stayed narrow (its slider and combo boxes cut off) once the window
    was large again. It gets its default share back; a dock the user widened keeps its width."""
    settings.demo_offered = True
    w = MainWindow(settings)
    try:
        w.show()
        qtbot.waitExposed(w)
        qtbot.wait(50)
        first, start = w.plan_dock.width(), w.size()  # the first window's own layout
        w.resize(560, 420)
        qtbot.waitUntil(lambda: w.plan_dock.width() < first)
        w.resize(start)
        qtbot.waitUntil(lambda: w.plan_dock.width() >= first - 2)
        w.resize(790, 760)
        w.reset_layout()
        qtbot.wait(50)
        wide = w.plan_dock.width()
        w.resize(560, 420)  # below what the docks want: they are squeezed
        qtbot.waitUntil(lambda: w.plan_dock.width() < wide)
        w.resize(790, 760)
        qtbot.waitUntil(lambda: w.plan_dock.width() >= wide - 2)
        w.resizeDocks([w.plan_dock], [wide + 60], Qt.Orientation.Horizontal)  # the user's
        qtbot.wait(50)
        widened = w.plan_dock.width()
        assert widened > wide
        w.resize(795, 765)
        qtbot.wait(50)
        assert w.plan_dock.width() >= widened
        # a dock the user made narrower stays narrower when the window grows (review)
        w.resizeDocks([w.base_dock], [w.base_dock.width() - 60], Qt.Orientation.Horizontal)
        qtbot.wait(50)
        narrowed = w.base_dock.width()
        w.resize(796, 766)
        qtbot.wait(50)
        assert w.base_dock.width() == narrowed
    finally:
        dispose(w)


def test_a_narrower_window_takes_its_loss_from_the_base_tree_too(qtbot, settings: Settings,
                                                                 asked: Asked,
                                                                 model_files) -> None:
    """At 1024 x 700 Qt took all the lost width from the plan (220 px: step names elided to
    'm...1', the editor cut off) and the zoo, while the base tree kept its 340 px (its title
    on one line was its minimum width)."""
    settings.demo_offered = True
    w = MainWindow(settings)
    try:
        w.resize(1440, 900)
        w.show()
        qtbot.waitExposed(w)
        ready(qtbot, w)
        w.files.open_paths([str(model_files["base_mlp"]), str(model_files["zoo_mlp"])])
        qtbot.waitUntil(lambda: w.workspace.base is not None and len(w.workspace.zoo) == 1
                        and not w.jobs.is_busy(), timeout=60000)
        w.reset_layout()
        qtbot.wait(50)
        base, plan = w.base_dock.width(), w.plan_dock.width()
        w.resize(1024, 700)
        qtbot.waitUntil(lambda: w.width() == 1024)
        qtbot.wait(50)
        share = w.dock_layout._default_sizes()[0][1]
        assert w.base_dock.width() < base
        assert w.plan_dock.width() >= min(plan, share[1]) - 2, (w.plan_dock.width(), share)
        w.resize(1440, 900)  # and back: the docks as they were
        qtbot.waitUntil(lambda: abs(w.base_dock.width() - base) <= 2
                        and abs(w.plan_dock.width() - plan) <= 2)
    finally:
        w.session.mark_clean()
        dispose(w)


def test_first_launch_offers_the_demo_zoo(qtbot, settings: Settings, asked: Asked,
                                          monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAL_ZOO_DIR", str(tmp_path / "no-zoo-yet"))
    w = MainWindow(settings)  # demo_offered is False: a first launch
    try:
        w.show()
        w.start_up()
        qtbot.waitUntil(lambda: w.findChild(DemoZooDialog) is not None, timeout=60000)
        dialog = w.findChild(DemoZooDialog)
        assert dialog.isVisible() and dialog._go.text() == "Build and Open"
        assert settings.demo_offered  # offered once, never again
        dialog._later.click()
        assert not dialog.isVisible()
    finally:
        dispose(w)


def test_no_demo_offer_over_what_the_user_opened_during_start_up(
        qtbot, settings: Settings, asked: Asked, monkeypatch, tmp_path: Path) -> None:
    """On a first launch, Open Demo Zoo clicked on the welcome page while the engine started:
    the first-launch offer then popped up over it as a second dialog."""
    monkeypatch.setenv("MAL_ZOO_DIR", str(tmp_path / "no-zoo-yet"))
    w = MainWindow(settings)  # demo_offered is False: a first launch
    try:
        w.show()
        w.start_up()
        w.actions.open_demo.trigger()  # queued behind the engine's start
        qtbot.waitUntil(lambda: w.findChild(DemoZooDialog) is not None
                        and not w.jobs.is_busy(), timeout=60000)
        qtbot.wait(200)
        assert len([d for d in w.findChildren(DemoZooDialog) if d.isVisible()]) == 1
        assert settings.demo_offered  # the user knows the demo: never offered again
    finally:
        dispose(w)


def test_restore_autosaved_work_after_a_crash(qtbot, window: MainWindow, asked: Asked,
                                              small_zoo) -> None:
    from mal_desktop.core.merge.plan import AssemblyPlan

    data_dir = window.settings.data_dir()
    plan = AssemblyPlan(base=str(small_zoo.path_of("mlp-w32-s0")),
                        zoo={"d": str(small_zoo.path_of("mlp-w32-s1"))},
                        steps=[AssemblyStep("d", "layers.1", "layers.1", 0.25)])
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    crashed = recovery_path(data_dir, proc.pid)
    write_recovery(data_dir, Project(plan, "digits", {"selected_step": 0}), None).rename(crashed)
    asked.answers["offer_recovery"] = ask.RESTORE
    ready(qtbot, window)  # start-up asks, then reopens the models of the autosave
    qtbot.waitUntil(lambda: window.workspace.base is not None and not window.jobs.runner.is_running(),
                    timeout=30000)
    assert asked.calls == ["offer_recovery"]
    assert window.workspace.plan.steps == plan.steps and set(window.workspace.zoo) == {"d"}
    assert window.windowTitle().startswith("*")  # restored work is unsaved work
    assert not crashed.exists()


def test_restored_work_keeps_its_base_when_files_are_named(qtbot, window: MainWindow,
                                                           asked: Asked, small_zoo) -> None:
    """Restoring after a crash while the command line names a model: the restored base stays
    (the file used to replace it once the restored project had loaded); the file joins the
    zoo."""
    from mal_desktop.core.merge.plan import AssemblyPlan

    data_dir = window.settings.data_dir()
    base = str(small_zoo.path_of("mlp-w32-s0"))
    plan = AssemblyPlan(base=base, zoo={"d": str(small_zoo.path_of("mlp-w32-s1"))},
                        steps=[AssemblyStep("d", "layers.1", "layers.1", 0.25)])
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    write_recovery(data_dir, Project(plan, "digits", {}), None).rename(
        recovery_path(data_dir, proc.pid))
    asked.answers["offer_recovery"] = ask.RESTORE
    window.start_up([str(small_zoo.path_of("mlp-w64-s0"))])
    qtbot.waitUntil(lambda: window.workspace is not None and len(window.workspace.zoo) == 2
                    and not window.jobs.is_busy(), timeout=60000)
    assert window.workspace.base.path_text == base
    assert set(window.workspace.zoo) == {"d", "mlp-w64-s0"}
    assert window.workspace.plan.steps == plan.steps


def test_command_line_files_open_after_the_engine_starts(tmp_path: Path, small_zoo) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT),
           "MAL_DEVICE": "cpu"}
    base, donor = small_zoo.path_of("mlp-w32-s0"), small_zoo.path_of("cnn-w8-s0")
    out = subprocess.run([sys.executable, "-m", "mal_desktop", "--startup-probe", "engine",
                          "--settings", str(tmp_path / "s.ini"), str(base), str(donor)],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "heavy_modules_loaded=none" in out.stdout
    assert "device='CPU'" in out.stdout and "'digits'" in out.stdout
    assert "models=['mlp-w32-s0', 'cnn-w8-s0']" in out.stdout  # first file = base, then zoo


def test_dark_glyph_icons_are_lightened_for_a_dark_palette(qtbot) -> None:
    """Fusion's play/arrow glyphs are near-black: on a dark theme they must be tinted to show."""
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QColor
    from PySide6.QtWidgets import QStyle

    from mal_desktop.gui.icons import _is_dark_glyph, action_icon

    name = "no-such-theme-icon"  # force the style's fallback pixmap
    plain = action_icon(name, QStyle.StandardPixmap.SP_MediaPlay)
    tinted = action_icon(name, QStyle.StandardPixmap.SP_MediaPlay, QColor("white"))
    assert _is_dark_glyph(plain) and not _is_dark_glyph(tinted)
    image = tinted.pixmap(QSize(16, 16)).toImage()
    assert any(image.pixelColor(x, y).alpha() > 0 for x in range(16) for y in range(16))
