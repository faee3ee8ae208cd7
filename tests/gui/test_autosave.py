"""The autosave timer (gui/autosave.py); what it writes is tested in tests/core/test_project.py."""

from __future__ import annotations

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
    saver = Autosaver(data_dir, lambda: (project, None), interval_s=3600)
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


def test_autosaver_timer_fires(qtbot, tmp_path: Path) -> None:
    saver = Autosaver(tmp_path / "data", lambda: (Project(), None), interval_s=1)
    saver._timer.setInterval(20)  # the public minimum is a second; tests need not wait that long
    saver.mark_dirty()
    qtbot.waitUntil(saver.path.is_file, timeout=3000)
    saver.stop()
