"""pytest-qt set-up for the GUI tests: offscreen platform, settings in a temporary file."""

from __future__ import annotations

import os

# Before anything imports Qt: no display is needed (CI, ssh sessions).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MAL_DEVICE", "cpu")  # tests compare numbers; keep them on one device

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from layer_fixtures import entry, loaded  # noqa: E402

from mal_desktop.core.io.files import save_model  # noqa: E402

from mal_desktop.gui.controllers.session import SessionController  # noqa: E402
from mal_desktop.gui.job_queue import JobQueue  # noqa: E402
from mal_desktop.gui.settings import Settings  # noqa: E402
from mal_desktop.gui.workspace import Workspace  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A Settings facade backed by a temporary ini file (data dir beside it)."""
    return Settings(tmp_path / "settings" / "mal-desktop.ini")


@pytest.fixture
def ws(qapp) -> Workspace:
    """A workspace with a base MLP and three zoo models (two MLP widths, a CNN)."""
    w = Workspace()
    w.set_base(entry("base_mlp"))
    for name in ("zoo_mlp", "zoo_mlp5", "zoo_cnn"):
        w.add_zoo(entry(name))
    return w


@pytest.fixture
def model_files(tmp_path: Path) -> dict[str, Path]:
    """Tiny MLPs saved as model files: a base and a same-architecture zoo model."""
    out = {}
    for name in ("base_mlp", "zoo_mlp"):
        out[name] = save_model(loaded(name), tmp_path / f"{name}.safetensors",
                               {"dataset": "digits"})
    return out


@pytest.fixture
def jobs(qtbot) -> Iterator[JobQueue]:
    """The window's job queue over one worker thread, without a window."""
    queue = JobQueue()
    yield queue
    queue.shutdown()  # join the worker thread before Qt objects go away


@pytest.fixture
def session(jobs: JobQueue, settings: Settings) -> Iterator[SessionController]:
    """The session controller (workspace, undo stack, autosave) on the ``jobs`` queue."""
    s = SessionController(settings, jobs)
    yield s
    s.autosaver.stop()
