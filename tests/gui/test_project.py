"""Project files (.malproj), autosave and recovery, and the Settings facade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.gui.project import (PROJECT_VERSION, Autosaver, Project, ProjectError,
                                     find_recoveries, load_project, load_recovery,
                                     recovery_path, save_project, write_recovery)
from mal_desktop.gui.settings import MAX_RECENT, Settings

pytestmark = pytest.mark.gui


def make_project(root: Path) -> Project:
    inside = root / "proj" / "models"
    outside = root / "elsewhere"
    inside.mkdir(parents=True)
    outside.mkdir()
    for p in (inside / "base.safetensors", inside / "a.safetensors", outside / "b.safetensors"):
        p.write_bytes(b"x")  # project files only reference models; content is not read
    plan = AssemblyPlan(
        base=str(inside / "base.safetensors"),
        zoo={"a": str(inside / "a.safetensors"), "b": str(outside / "b.safetensors")},
        steps=[AssemblyStep("a", "fc1", "fc1", 0.25, "chain"),
               AssemblyStep("b", "fc2", "fc2", 0.75, "local", "keep", "ties",
                            (("density", 0.3),))])
    return Project(plan, data="digits-permuted", ui={"selected_step": 1, "curve_grid": 15})


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_round_trip_keeps_plan_paths_data_and_ui(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    path = save_project(project, tmp_path / "proj" / "study")  # suffix added
    assert path.name == "study.malproj"
    doc = json.loads(path.read_text())
    assert doc["format"] == "mal-desktop-project" and doc["version"] == PROJECT_VERSION
    # Inside the project folder: relative (portable); outside: absolute.
    assert doc["base"] == "models/base.safetensors"
    assert doc["zoo"]["a"] == "models/a.safetensors"
    assert Path(doc["zoo"]["b"]).is_absolute()

    loaded = load_project(path)
    assert loaded.plan.base == project.plan.base
    assert loaded.plan.zoo == project.plan.zoo
    assert loaded.plan.steps == project.plan.steps
    assert loaded.data == "digits-permuted"
    assert loaded.ui == {"selected_step": 1, "curve_grid": 15}


def test_moved_project_folder_still_finds_its_models(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    save_project(project, tmp_path / "proj" / "p.malproj")
    (tmp_path / "proj").rename(tmp_path / "moved")
    loaded = load_project(tmp_path / "moved" / "p.malproj")
    assert loaded.plan.base == str((tmp_path / "moved" / "models" / "base.safetensors").resolve())


@pytest.mark.parametrize("change, message", [
    ({"version": PROJECT_VERSION + 1}, "newer MAL Desktop"),
    ({"version": "one"}, "no valid version"),
    ({"format": "something-else"}, "not a MAL Desktop project"),
    ({"zoo": {"a": 3}}, "'zoo' must map"),
    ({"steps": [{"source": "zz", "source_layer": "fc1", "base_layer": "fc1"}]}, "'zz'"),
    ({"steps": [{"source": "a", "source_layer": "fc1", "base_layer": "fc1", "lambda": 7}]},
     "lambda must be in [0, 1]"),
])
def test_bad_projects_raise_readable_errors(tmp_path: Path, change: dict, message: str) -> None:
    path = save_project(make_project(tmp_path), tmp_path / "proj" / "p.malproj")
    doc = json.loads(path.read_text())
    doc.update(change)
    path.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_project(path)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path / "missing.malproj")
    broken = tmp_path / "broken.malproj"
    broken.write_text('{"format": "mal-desktop-project",\n "version": 1,,}')
    with pytest.raises(ProjectError, match="JSON error on line 2"):
        load_project(broken)


def test_empty_project_round_trips(tmp_path: Path) -> None:
    path = save_project(Project(), tmp_path / "empty.malproj")
    loaded = load_project(path)
    assert loaded.plan.base == "" and loaded.plan.zoo == {} and loaded.plan.steps == []


def test_recovery_of_a_crashed_session(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    project = make_project(tmp_path)
    project_file = save_project(project, tmp_path / "proj" / "p.malproj")
    written = write_recovery(data_dir, project, project_file)
    assert written == recovery_path(data_dir)
    # Our own (running) session's file is never offered.
    assert find_recoveries(data_dir) == []
    crashed = recovery_path(data_dir, dead_pid())
    written.rename(crashed)
    os.utime(project_file, (1_000_000, 1_000_000))  # the project is older than the autosave
    found = find_recoveries(data_dir)
    assert [r.path for r in found] == [crashed]
    assert found[0].project_path == project_file
    assert "p.malproj" in found[0].describe()
    restored = load_recovery(found[0])
    assert restored.plan.steps == project.plan.steps and restored.plan.zoo == project.plan.zoo


def test_recovery_older_than_its_project_is_dropped(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    project = make_project(tmp_path)
    project_file = save_project(project, tmp_path / "proj" / "p.malproj")
    crashed = recovery_path(data_dir, dead_pid())
    write_recovery(data_dir, project, project_file).rename(crashed)
    os.utime(crashed, (1_000_000, 1_000_000))  # saved after the autosave: nothing to recover
    assert find_recoveries(data_dir) == []
    assert not crashed.exists()


def test_untitled_recovery_is_offered(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    crashed = recovery_path(data_dir, dead_pid())
    write_recovery(data_dir, make_project(tmp_path), None).rename(crashed)
    found = find_recoveries(data_dir)
    assert len(found) == 1 and found[0].project_path is None
    assert "untitled" in found[0].describe()


def test_autosaver_writes_only_when_dirty(qtbot, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    project = make_project(tmp_path)
    saver = Autosaver(data_dir, lambda: (project, None), interval_s=3600)
    assert not saver.save_now()
    saver.mark_dirty()
    assert saver.save_now() and saver.path.is_file()
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


def test_settings_are_typed_and_bounded(tmp_path: Path) -> None:
    s = Settings(tmp_path / "s.ini")
    assert s.theme == "system" and s.dataset == "digits" and s.curve_grid == 11
    for i in range(MAX_RECENT + 3):
        s.add_recent_file(tmp_path / f"f{i}.malproj")
    s.add_recent_file(tmp_path / "f3.malproj")  # moves to the front, no duplicate
    recent = s.recent_files
    assert len(recent) == MAX_RECENT and recent[0].endswith("f3.malproj")
    assert len(set(recent)) == len(recent)
    s.curve_grid = 1000
    s.theme = "dark"
    s.demo_offered = True
    s.sync()
    again = Settings(tmp_path / "s.ini")
    assert again.curve_grid == 101 and again.theme == "dark" and again.demo_offered is True
    assert again.recent_files == recent
    with pytest.raises(ValueError):
        again.theme = "purple"
    assert again.data_dir() == tmp_path / "data" and again.data_dir().is_dir()
