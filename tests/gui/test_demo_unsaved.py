"""Opening an already built demo zoo replaces the session: it must ask about unsaved work first
(File > Open Language Demo Zoo and File > Open Demo Zoo both open a built zoo at once)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402

from mal_desktop.gui import tasks  # noqa: E402
from mal_desktop.gui.controllers.files import FilesController  # noqa: E402
from mal_desktop.gui.controllers.session import SessionController  # noqa: E402
from mal_desktop.gui.dialogs import ask  # noqa: E402
from mal_desktop.gui.job_queue import JobQueue  # noqa: E402
from mal_desktop.gui.settings import Settings  # noqa: E402

pytestmark = pytest.mark.gui


def _program(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 10)).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(module, (torch.randn(4, 1, 8, 8),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def _open_first_model(monkeypatch) -> None:
    """Both demos open the index's first model alone (as base, no zoo)."""
    from mal_desktop.gui.controllers import files

    for kind, demo in files._DEMOS.items():
        monkeypatch.setitem(files._DEMOS, kind,
                            replace(demo, pick=lambda idx: (idx.entries[0], [])))


@pytest.mark.parametrize("action", ["open_lm_demo", "open_demo"])
def test_opening_a_built_demo_zoo_asks_about_unsaved_work(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings, monkeypatch,
        tmp_path: Path, action: str) -> None:
    mine = _program(tmp_path / "mine.pt2", 0)
    demo = _program(tmp_path / "demo.pt2", 1)
    index = SimpleNamespace(entries=[SimpleNamespace(name="demo", dataset="python-code")],
                            dir=tmp_path, path_of=lambda _name: demo, names=lambda: ["demo"])

    def built(cancel, *args, **kwargs):  # the zoo is built: its index, at once
        yield from ()
        return tasks.DemoStatus(tmp_path, index)

    monkeypatch.setattr(tasks, "lm_demo_status_job", built)
    monkeypatch.setattr(tasks, "demo_status_job", built)
    _open_first_model(monkeypatch)
    asked: list[str] = []

    def cancel_answer(*_a, **_k):
        asked.append("unsaved_changes")
        return ask.CANCEL

    monkeypatch.setattr(ask, "unsaved_changes", cancel_answer)
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(mine)])
    assert session.is_dirty()  # the user's own, unsaved work

    with qtbot.waitSignal(jobs.jobEnded, timeout=60000):  # the status job
        getattr(files, action)()
    for _ in range(3):  # and whatever it starts
        qtbot.wait(300)
        qtbot.waitUntil(lambda: not jobs.runner.is_running(), timeout=60000)
    assert asked == ["unsaved_changes"]
    ws = session.workspace
    assert ws.base is not None and ws.base.path_text == str(mine)  # kept: the user cancelled
    assert session.is_dirty()


def test_the_digits_demo_scores_curves_on_digits_after_the_language_demo(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings, monkeypatch,
        tmp_path: Path) -> None:
    """The language demo chooses python-code for curves (remembered in the settings); the
    digits demo then kept it, so its example step (Run, F5) scored an MLP on text."""
    demo = _program(tmp_path / "demo.pt2", 1)
    index = SimpleNamespace(entries=[SimpleNamespace(name="demo", dataset="digits")],
                            dir=tmp_path, path_of=lambda _name: demo, names=lambda: ["demo"])

    def built(cancel, *args, **kwargs):
        yield from ()
        return tasks.DemoStatus(tmp_path, index)

    monkeypatch.setattr(tasks, "demo_status_job", built)
    _open_first_model(monkeypatch)
    session.set_data("python-code")  # as File > Open Language Demo Zoo left it
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_demo()
    assert session.data == "digits" and settings.dataset == "digits"
    assert not session.is_dirty()
