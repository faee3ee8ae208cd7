"""The autosave timer (gui/autosave.py); what it writes is tested in tests/core/test_project.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.core.project.document import Project
from mal_desktop.core.project.recovery import Recovery, load_recovery
from mal_desktop.gui.autosave import Autosaver

pytestmark = pytest.mark.gui


def make_project(root: Path) -> Project:
    plan = AssemblyPlan(base=str(root / "base.safetensors"), zoo={"a": str(root / "a.safetensors")},
                        steps=[AssemblyStep("a", "fc1", "fc1", 0.25, "chain")])
    return Project(plan, data="digits", ui={"selected_step": 0})


def test_autosaver_writes_only_when_dirty(qtbot, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    project = make_project(tmp_path)
    saver = Autosaver(data_dir, lambda: (project, None), quiet_s=3600, max_wait_s=3600)
    assert not saver.save_now()
    saver.mark_dirty()
    assert saver.save_now() and saver.path.is_file()
    restored = load_recovery(Recovery(saver.path, None, 0.0))
    assert restored.plan.steps == project.plan.steps
    first = saver.path.stat().st_mtime_ns
    assert not saver.save_now()  # nothing new
    assert saver.path.stat().st_mtime_ns == first
    saver.mark_clean()
    assert not saver.path.exists()
    saver.stop()


def test_autosave_waits_for_a_pause_in_the_edits(qtbot, tmp_path: Path) -> None:
    writes = []
    saver = Autosaver(tmp_path / "data", lambda: (writes.append(1) or Project(), None),
                      quiet_s=0.3, max_wait_s=60)
    for _ in range(5):  # five edits 0.1 s apart: no write while they keep coming
        saver.mark_dirty()
        qtbot.wait(100)
    assert writes == [] and not saver.path.exists()
    qtbot.waitUntil(saver.path.is_file, timeout=3000)  # then one write, after the pause
    qtbot.wait(500)
    assert writes == [1]
    saver.stop()


def test_autosave_writes_at_the_latest_after_max_wait(qtbot, tmp_path: Path) -> None:
    saver = Autosaver(tmp_path / "data", lambda: (Project(), None), quiet_s=0.3, max_wait_s=0.6)
    started = time.monotonic()
    while not saver.path.exists():  # a slider dragged on and on: an edit every 0.1 s
        assert time.monotonic() - started < 3.0, "no autosave while edits kept coming"
        saver.mark_dirty()
        qtbot.wait(100)
    assert time.monotonic() - started >= 0.5
    saver.stop()


def test_default_autosave_is_seconds_after_an_edit(qtbot, tmp_path: Path) -> None:
    saver = Autosaver(tmp_path / "data", lambda: (Project(), None))
    saver.mark_dirty()
    qtbot.waitUntil(saver.path.is_file, timeout=2600)  # QUIET_S = 2 s after the last edit
    saver.stop()
