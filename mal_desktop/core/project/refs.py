"""A project saved by the app (.malproj) as a model reference: the merge its plan assembles.

Registered as the ``project`` kind of :mod:`core.toolkit.model_refs` by
:func:`register_projects` (the toolkit sits below projects, so it cannot know them), so ``mal eval-matrix --models work.malproj`` scores the model the app's
"merged (current plan)" row scores: the same content hash, so the two share cached cells.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MalError
from ..toolkit.model_refs import ModelRef, plan_ref, register_model_kind
from .document import PROJECT_SUFFIX, load_project_plan


def _project_factory(text: str, zoo_dir: Path | None, arch: str | None) -> ModelRef | None:
    if not text.lower().endswith(PROJECT_SUFFIX):
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise MalError(f"{text}: no such project file")
    return plan_ref(load_project_plan(path), name=path.stem, text=text, arch=arch)


def register_projects() -> None:
    """Let model references name projects (idempotent)."""
    register_model_kind("project", _project_factory)
