"""Crash recovery as a user meets it: edit, the app is killed (kill -9) within 3 seconds, the
app is started again with --demo: the edit is offered, restored, and wins over the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.gui.dialogs import ask
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.settings import Settings
from window_helpers import dispose

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]


def test_an_edit_killed_within_3_s_is_restored_over_demo(qtbot, tmp_path, small_zoo, monkeypatch):
    ini = tmp_path / "settings.ini"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "MAL_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_edit_driver.py")),
                             str(ini), str(small_zoo.path_of("mlp-w32-s0")),
                             str(small_zoo.path_of("mlp-w64-s0"))],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the edit is made (or the driver dies)
        assert line.startswith("EDITED"), line + proc.stderr.read()
        edited = float(line.split()[1])
        time.sleep(2.8)  # the debounce is 2 s: the edit must be on disk before 3 s have passed
        assert time.monotonic() - edited < 3.0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    # Start again with --demo: the restore is offered first and wins over the demo zoo.
    questions = []

    def restore(*_args):
        questions.append("offer_recovery")
        return ask.RESTORE

    monkeypatch.setattr(ask, "offer_recovery", restore)
    demo_opened = []
    settings = Settings(ini)
    window = MainWindow(settings)
    monkeypatch.setattr(window.files, "build_and_open_demo",
                        lambda kind="digits": demo_opened.append(kind))
    window.show()
    try:
        window.start_up([], demo=True)
        qtbot.waitUntil(lambda: window.workspace is not None and window.workspace.base is not None
                        and not window.jobs.runner.is_running(), timeout=60000)
        assert questions == ["offer_recovery"] and demo_opened == []
        steps = window.workspace.plan.steps
        assert [(s.source_layer, s.base_layer, s.lam) for s in steps] == [
            ("layers.1", "layers.1", 0.35)]
        assert isinstance(steps[0], AssemblyStep)
        assert window.windowTitle().startswith("*")  # restored work is unsaved work
        recovery_dir = settings.data_dir() / "recovery"
        # the crashed session's file is gone only now that its project is open
        assert not any(p.name.endswith(f"{proc.pid}.malproj") for p in recovery_dir.iterdir())
    finally:
        window.session.mark_clean()
        dispose(window)
