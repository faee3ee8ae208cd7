"""Project files (.malproj), the plan they hold, and crash recovery (core, no Qt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mal_desktop.core.errors import MalError
from mal_desktop.core.merge.plan import AssemblyPlan, AssemblyStep
from mal_desktop.core.project.document import (PROJECT_VERSION, Project, ProjectError,
                                               load_project, load_project_plan, save_project)
from mal_desktop.core.project.recovery import (discard_recovery, find_recoveries, load_recovery,
                                               recovery_path, write_recovery)


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
     "step 1: a:fc1 -> fc1: lambda must be in [0, 1]"),
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
    with pytest.raises(ProjectError, match="JSON error: line 2"):
        load_project(broken)


def test_empty_project_round_trips(tmp_path: Path) -> None:
    path = save_project(Project(), tmp_path / "empty.malproj")
    loaded = load_project(path)
    assert loaded.plan.base == "" and loaded.plan.zoo == {} and loaded.plan.steps == []


def test_project_plan_round_trips_for_the_cli(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    path = save_project(project, tmp_path / "proj" / "p.malproj")
    plan = load_project_plan(path)
    assert isinstance(plan, AssemblyPlan)
    assert plan.steps == project.plan.steps
    assert plan.base == project.plan.base and plan.zoo == project.plan.zoo
    assert all(Path(p).is_absolute() for p in (plan.base, *plan.zoo.values()))
    assert plan.data == "digits-permuted"


def test_project_plan_resolves_paths_against_the_project_folder(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    save_project(project, tmp_path / "proj" / "p.malproj")
    (tmp_path / "proj").rename(tmp_path / "moved")
    plan = load_project_plan(tmp_path / "moved" / "p.malproj")
    assert plan.base == str((tmp_path / "moved" / "models" / "base.safetensors").resolve())
    assert Path(plan.base).is_file()


def test_project_plan_errors_name_the_file(tmp_path: Path) -> None:
    empty = save_project(Project(), tmp_path / "empty.malproj")
    with pytest.raises(ProjectError, match="no base model") as info:
        load_project_plan(empty)
    assert str(empty) in str(info.value) and isinstance(info.value, MalError)
    foreign = tmp_path / "plan.malproj"
    foreign.write_text(json.dumps({"version": 1, "base": "b.safetensors"}))
    with pytest.raises(ProjectError, match="not a MAL Desktop project") as info:
        load_project_plan(foreign)
    assert str(foreign) in str(info.value)
    with pytest.raises(ProjectError, match="does not exist"):
        load_project_plan(tmp_path / "missing.malproj")


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
    assert found[0].pid == int(crashed.stem.split("-")[-1])
    restored = load_recovery(found[0])
    assert restored.plan.steps == project.plan.steps and restored.plan.zoo == project.plan.zoo
    discard_recovery(data_dir, found[0].pid)
    assert not crashed.exists() and find_recoveries(data_dir) == []


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


def test_the_output_chosen_as_the_logits_round_trips(tmp_path: Path) -> None:
    """A model returning several outputs: the project keeps which one is the logits (the base's
    and each zoo model's), for the app and for `mal assemble project.malproj`; a project
    without a choice writes nothing of it (and reads as before)."""
    project = make_project(tmp_path)
    plain = json.loads(save_project(project, tmp_path / "proj" / "plain").read_text())
    assert "base_output" not in plain and "zoo_outputs" not in plain
    project.plan.base_output, project.plan.zoo_outputs = 1, {"b": 2}
    path = save_project(project, tmp_path / "proj" / "chosen")
    doc = json.loads(path.read_text())
    assert (doc["base_output"], doc["zoo_outputs"]) == (1, {"b": 2})
    loaded = load_project(path)
    assert (loaded.plan.base_output, loaded.plan.zoo_outputs) == (1, {"b": 2})
    assert load_project_plan(path).outputs_by_path() == {project.plan.base: 1,
                                                         project.plan.zoo["b"]: 2}
    # through crash recovery too
    data_dir = tmp_path / "data"
    crashed = recovery_path(data_dir, dead_pid())
    write_recovery(data_dir, project, path).rename(crashed)
    os.utime(path, (1_000_000, 1_000_000))
    restored = load_recovery(find_recoveries(data_dir)[0])
    assert (restored.plan.base_output, restored.plan.zoo_outputs) == (1, {"b": 2})
    for bad, message in (({"base_output": -1}, "'base_output' must be a whole number"),
                         ({"base_output": "1"}, "'base_output' must be a whole number"),
                         ({"zoo_outputs": {"nobody": 0}}, "names 'nobody'"),
                         ({"zoo_outputs": {"a": 1.5}}, "'zoo_outputs' of 'a'"),
                         ({"zoo_outputs": [1]}, "must map zoo model names")):
        path.write_text(json.dumps({**doc, **bad}))
        with pytest.raises(ProjectError, match=message) as err:
            load_project(path)
        assert str(path) in str(err.value)


def test_a_text_dataset_round_trips_relative_to_the_project(tmp_path: Path) -> None:
    """A project whose data was 'text:/abs/enc.txt;context=32' saved it as a path of its own
    ('text:/abs/...' relative to nothing) and read it back as '<folder>/text:/abs/...'."""
    project = make_project(tmp_path)
    corpus = tmp_path / "proj" / "corpus.txt"
    corpus.write_text("print('hello')\n" * 50)
    project.data = f"text:{corpus};context=32"
    path = save_project(project, tmp_path / "proj" / "p.malproj")
    assert json.loads(path.read_text())["data"] == "text:corpus.txt;context=32"
    (tmp_path / "proj").rename(tmp_path / "moved")
    loaded = load_project(tmp_path / "moved" / "p.malproj")
    moved = (tmp_path / "moved" / "corpus.txt").resolve()
    assert loaded.data == loaded.plan.data == f"text:{moved};context=32"
