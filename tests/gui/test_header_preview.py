"""A large model's layer tree shows from its headers while its weights are read.

The app opens a Hugging Face folder in two steps (tasks.load_models_job): the tree from the
headers first (statistics say "reading the weights"), then the loaded model, whose statistics
fill the same rows in: what the user expanded stays expanded. A load that fails after the
preview takes it back. ``core.jobs.HEADER_FIRST_PARAMETERS`` is lowered so a tiny folder counts
as large.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from test_open_hf_folder import _folder as llama_folder  # noqa: E402

from mal_desktop.core import jobs as core_jobs  # noqa: E402
from mal_desktop.gui import tasks  # noqa: E402
from mal_desktop.gui.controllers.files import FilesController  # noqa: E402
from mal_desktop.gui.controllers.run import RunController  # noqa: E402
from mal_desktop.gui.controllers.session import SessionController  # noqa: E402
from mal_desktop.gui.job_queue import JobQueue  # noqa: E402
from mal_desktop.gui.models.layer_text import COL_STATS  # noqa: E402
from mal_desktop.gui.settings import Settings  # noqa: E402
from mal_desktop.gui.views.layer_tree_view import LayerTreePane  # noqa: E402

pytestmark = pytest.mark.gui
pytest.importorskip("transformers")

LAYER = "model.layers.1.mlp.up_proj"


def _folder(path: Path, seed: int, nan: bool = False) -> Path:
    """A two-layer tiny Llama folder (one NaN in LAYER's weight when ``nan``)."""
    return llama_folder(path, seed, f"{LAYER}.weight" if nan else None, num_hidden_layers=2)


@pytest.fixture(autouse=True)
def _everything_is_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_jobs, "HEADER_FIRST_PARAMETERS", 0)


def _stats_text(pane: LayerTreePane, path: str) -> str:
    index = pane.model.index_of(path, COL_STATS)
    weight = pane.model.index(0, COL_STATS, index.siblingAtColumn(0))  # its weight tensor
    return str(weight.data())


def test_the_tree_shows_before_the_weights_and_keeps_its_rows(
        qtbot, session: SessionController, jobs: JobQueue, settings: Settings,
        tmp_path: Path) -> None:
    folder = _folder(tmp_path / "llama", 0)
    ws = session.install_workspace()
    pane = LayerTreePane(ws, "base")
    qtbot.addWidget(pane)
    runs = RunController(session, jobs)
    seen: list[tuple] = []

    def look() -> None:  # connected after the pane: it has taken the change already
        if ws.base is None:
            return
        if not ws.base.weights_read:  # the user opens a block while the weights load
            pane.view.expand(pane.proxy.mapFromSource(pane.model.index_of("model.layers.1")))
        seen.append((ws.base.weights_read, pane.model, _stats_text(pane, LAYER),
                     pane.title.text(), ws.reading(), runs.can_run()))

    ws.modelsChanged.connect(look)
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(folder)])
    first, last = seen[0], seen[-1]
    assert (first[0], last[0]) == (False, True)
    assert first[2] == "reading the weights\u2026" and "reading the weights" in first[3]
    assert first[4] == ["llama"] and last[4] == []
    assert last[2].startswith("\u2016\u00b7\u2016") and "reading" not in last[3]
    assert last[1] is first[1]  # the statistics were filled into the same rows
    assert pane.view.isExpanded(pane.proxy.mapFromSource(pane.model.index_of("model.layers.1")))
    assert ws.base.model.form == "hf-folder" and not any(
        t.is_meta for t in ws.base.model.module.parameters())


def test_steps_can_be_planned_on_the_preview(qtbot, session: SessionController, jobs: JobQueue,
                                             settings: Settings, tmp_path: Path) -> None:
    """A step dropped while the weights are read is checked from the headers, and Run waits
    for the weights (it says so rather than running a model that has none)."""
    from mal_desktop.core.merge.plan import AssemblyStep

    a, b = _folder(tmp_path / "a", 0), _folder(tmp_path / "b", 1)
    ws = session.install_workspace()
    runs = RunController(session, jobs)
    files = FilesController(session, jobs, settings)
    added: list = []
    messages: list[str] = []
    runs.message.connect(lambda text, _ms: messages.append(text))

    def plan() -> None:
        if "b" in ws.zoo and not ws.zoo["b"].weights_read and not added:
            added.append(ws.add_step(AssemblyStep("b", LAYER, LAYER)))
            runs.run()

    ws.modelsChanged.connect(plan)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(a), str(b)])
    assert added and added[0].ok, added[0].message
    assert messages == ["Run waits for the weights of b: they are still being read"]
    assert [s.source for s in ws.plan.steps] == ["b"] and ws.zoo["b"].weights_read
    assert runs.can_run()


def test_a_load_that_fails_takes_its_preview_back(qtbot, session: SessionController,
                                                  jobs: JobQueue, settings: Settings,
                                                  tmp_path: Path, model_files) -> None:
    """A NaN found once the weights are read: the preview goes, the base it replaced comes
    back, and so does the data set that base is read with."""
    from mal_desktop.core.project.demo import DEMO_DATA, LM_DEMO_DATA

    bad = _folder(tmp_path / "bad", 1, nan=True)
    ws = session.install_workspace()
    files = FilesController(session, jobs, settings)
    with qtbot.waitSignal(files.modelsOpened, timeout=60000):
        files.open_paths([str(model_files["base_mlp"])])
    kept = ws.base
    assert session.data == DEMO_DATA
    shown: list[tuple[str, str]] = []
    ws.modelsChanged.connect(lambda: shown.append((ws.base.name if ws.base else "",
                                                   session.data)))
    with qtbot.waitSignal(jobs.jobEnded, timeout=60000):
        files.load_models([tasks.LoadRequest("base", "bad", str(bad)),
                           tasks.LoadRequest("zoo", "bad", str(bad))])
    assert shown[0][0] == "bad"  # its tree showed while its weights were read
    assert session.data == DEMO_DATA and LM_DEMO_DATA in {d for _, d in shown}
    assert ws.base is kept and not ws.zoo  # and the NaN in them took it back

