"""Project files (.malproj): versioned JSON naming the model files, the plan and UI state.

A project never embeds weights (house style: JSON plus safetensors, never pickle). Model paths
are stored relative to the project's folder when the files live inside it (so a project folder
can be moved or shared) and absolute otherwise. Saving is atomic.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import __version__
from ..dataspec import map_spec_paths
from ..errors import MalError, PlanError
from ..io.atomic import atomic_write_text
from ..jsonio import loads_untrusted
from ..merge.plan import AssemblyPlan, AssemblyStep, check_output_index

PROJECT_FORMAT = "mal-desktop-project"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".malproj"


class ProjectError(MalError):
    """A project file cannot be read or written (names the file and the problem)."""


@dataclass
class Project:
    """What a project file holds.

    plan: base path, zoo models by name, steps (absolute paths in memory); data: the dataset
    for curves (registry name or .npz path); ui: free-form UI state (selected step, grid, ...).
    """

    plan: AssemblyPlan = field(default_factory=AssemblyPlan)
    data: str = "digits"
    ui: dict[str, Any] = field(default_factory=dict)


def _stored_path(p: str, folder: Path | None) -> str:
    """Relative to ``folder`` when ``p`` lies inside it, else absolute."""
    if not p:
        return p
    path = Path(p).expanduser().resolve()
    if folder is not None:
        try:
            return path.relative_to(folder.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def _resolved_path(p: str, folder: Path) -> str:
    if not p:
        return p
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else (folder / path).resolve())


def project_to_json(project: Project, folder: Path | None) -> dict[str, Any]:
    """The JSON document for ``project``; paths relative to ``folder`` where possible."""
    plan = project.plan
    data = map_spec_paths(project.data, lambda p: _stored_path(p, folder))
    doc: dict[str, Any] = {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "app_version": __version__,
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": _stored_path(plan.base, folder),
        "zoo": {name: _stored_path(p, folder) for name, p in plan.zoo.items()},
        "steps": [s.to_json() for s in plan.steps],
        "data": data,
        "ui": dict(project.ui),
    }
    # which output is the logits of a model returning several: only when chosen, so a project
    # without such models reads as before
    if plan.base_output is not None:
        doc["base_output"] = plan.base_output
    outputs = {k: v for k, v in plan.zoo_outputs.items() if k in plan.zoo}
    if outputs:
        doc["zoo_outputs"] = outputs
    return doc


def project_from_json(doc: Any, folder: Path, where: str) -> Project:
    """Parse a project document; relative paths are resolved against ``folder``.

    ``where`` names the file in error messages. Raises ProjectError for a foreign, newer or
    malformed document.
    """
    if not isinstance(doc, dict) or doc.get("format") != PROJECT_FORMAT:
        raise ProjectError(f"{where}: not a MAL Desktop project file")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise ProjectError(f"{where}: the project has no valid version number")
    if version > PROJECT_VERSION:
        raise ProjectError(f"{where}: the project was saved by a newer MAL Desktop (project "
                           f"version {version}, this one reads up to {PROJECT_VERSION}); "
                           "please update MAL Desktop")
    base = doc.get("base", "")
    zoo = doc.get("zoo", {})
    steps = doc.get("steps", [])
    data = doc.get("data", "digits")
    ui = doc.get("ui", {})
    if not isinstance(base, str):
        raise ProjectError(f"{where}: 'base' must be a file path")
    if not isinstance(zoo, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in zoo.items()):
        raise ProjectError(f"{where}: 'zoo' must map model names to file paths")
    if not isinstance(steps, list):
        raise ProjectError(f"{where}: 'steps' must be a list")
    if not isinstance(data, str) or not data:
        raise ProjectError(f"{where}: 'data' must name a dataset")
    if not isinstance(ui, dict):
        raise ProjectError(f"{where}: 'ui' must be an object")
    parsed = []
    for i, s in enumerate(steps):
        try:
            parsed.append(AssemblyStep.from_json(s) if isinstance(s, dict) else _bad_step(s))
        except PlanError as exc:
            raise ProjectError(f"{where}: step {i + 1}: {exc}") from None
    for i, step in enumerate(parsed):
        if step.source not in zoo:
            raise ProjectError(f"{where}: step {i + 1} uses zoo model {step.source!r}, which the "
                               f"project does not list ({', '.join(zoo) or 'no zoo models'})")
    base_output, zoo_outputs = _outputs(doc, zoo, where)
    plan = AssemblyPlan(base=_resolved_path(base, folder),
                        zoo={k: _resolved_path(v, folder) for k, v in zoo.items()},
                        data=None, steps=parsed, base_output=base_output,
                        zoo_outputs=zoo_outputs)
    data = map_spec_paths(data, lambda p: _resolved_path(p, folder))
    plan.data = data
    return Project(plan=plan, data=data, ui=dict(ui))


def _outputs(doc: dict, zoo: dict[str, str], where: str) -> tuple[int | None, dict[str, int]]:
    """The project's "base_output" and "zoo_outputs" (absent: None and {}), checked."""
    base_output = doc.get("base_output")
    zoo_outputs = doc.get("zoo_outputs", {})
    try:
        if base_output is not None:
            check_output_index(base_output, "'base_output'")
        if not isinstance(zoo_outputs, dict):
            raise PlanError("'zoo_outputs' must map zoo model names to output indices")
        for name, index in zoo_outputs.items():
            if name not in zoo:
                raise PlanError(f"'zoo_outputs' names {name!r}, which the project's 'zoo' does "
                                f"not list ({', '.join(zoo) or 'no zoo models'})")
            check_output_index(index, f"'zoo_outputs' of {name!r}")
    except PlanError as exc:
        raise ProjectError(f"{where}: {exc}") from None
    return base_output, dict(zoo_outputs)


def _bad_step(raw: Any) -> AssemblyStep:
    raise PlanError(f"a plan step must be an object, got {raw!r}")


def save_project(project: Project, path: str | Path) -> Path:
    """Write ``project`` to ``path`` atomically (suffix .malproj added when missing).

    Returns the written path. Raises ProjectError when the file cannot be written.
    """
    path = Path(path).expanduser()
    if path.suffix != PROJECT_SUFFIX:
        path = path.with_name(path.name + PROJECT_SUFFIX)
    text = json.dumps(project_to_json(project, path.parent), indent=2) + "\n"
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise ProjectError(f"{path}: cannot save the project ({exc.strerror or exc})") from None


def read_project_json(path: str | Path) -> Any:
    """The parsed JSON of a project (or recovery) file. Raises ProjectError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(f"{path}: the project file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read the project ({exc})") from None
    try:
        return loads_untrusted(text)
    except ValueError as exc:
        raise ProjectError(f"{path}: not a valid project file (JSON error: {exc})") from None


def load_project(path: str | Path) -> Project:
    """Read a .malproj file. Raises ProjectError (missing, corrupt, foreign or newer file)."""
    path = Path(path).expanduser()
    return project_from_json(read_project_json(path), path.parent.resolve(), str(path))


def load_project_plan(path: str | Path) -> AssemblyPlan:
    """The assembly plan a .malproj holds: base, zoo, steps and data, paths resolved.

    What ``mal assemble project.malproj`` runs; the GUI-only part of the project (ui) is
    dropped. Raises ProjectError naming the file when it cannot be read, is not a valid
    project, or names no base model (a plan cannot assemble without one).
    """
    path = Path(path).expanduser()
    plan = load_project(path).plan
    if not plan.base:
        raise ProjectError(f"{path}: the project has no base model to assemble into")
    return plan
