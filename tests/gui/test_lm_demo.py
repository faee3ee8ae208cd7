"""File > Open Language Demo Zoo: builds the language zoo in the worker (progress, Cancel),
caches it, then opens a base and the zoo with a text data set chosen for curves.

The action runs the real build, on the tiny test recipe (``default_lm_zoo(small=True)``: three
width-32 models, 30 steps) instead of the demo's five; skipped without the [hf] extra.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import shiboken6

from PySide6.QtCore import Qt

from mal_desktop.gui import tasks
from mal_desktop.gui.dialogs import ask
from mal_desktop.gui.dialogs.demo_zoo import DemoZooDialog
from mal_desktop.gui.views.evaluate_choices import KEY_ROLE
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.settings import Settings
from window_helpers import dispose

pytestmark = pytest.mark.gui
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

ItemIsEnabled = Qt.ItemFlag.ItemIsEnabled
SMALL = ["llama-w32-s0-code", "llama-w32-s1-code", "llama-w32-s1-docstrings"]


@pytest.fixture
def window(qtbot, settings: Settings, monkeypatch, tmp_path: Path) -> Iterator[MainWindow]:
    from mal_desktop.core.zoo import language

    real = language.default_lm_zoo
    monkeypatch.setattr(language, "default_lm_zoo", lambda small=False: real(small=True))
    monkeypatch.setenv("MAL_LM_ZOO_DIR", str(tmp_path / "lm-zoo"))
    monkeypatch.setenv("MAL_EVAL_CACHE", str(tmp_path / "eval"))
    monkeypatch.setattr(ask, "stop_running_job", lambda *_a: True)
    settings.demo_offered = True
    w = MainWindow(settings)
    w.show()
    qtbot.waitExposed(w)
    w.start_up()
    qtbot.waitUntil(lambda: w.workspace is not None and not w.jobs.runner.is_running(),
                    timeout=60000)
    yield w
    w.session.mark_clean()
    dispose(w)


def _dialog(qtbot, w: MainWindow) -> DemoZooDialog:
    w.actions.open_lm_demo.trigger()
    qtbot.waitUntil(lambda: w.findChild(DemoZooDialog) is not None, timeout=60000)
    dialog = w.findChild(DemoZooDialog)
    assert dialog.kind == "language" and dialog.windowTitle() == "Language Demo Zoo"
    assert dialog._go.text() == "Build and Open"
    assert dialog._later.isVisible() and not dialog._cancel.isVisible()  # Cancel: while building
    return dialog


def _folder_is_whole(zoo: Path) -> list[str]:
    """The zoo's listed models, after checking that nothing else is in the folder and that
    every listed model folder is complete."""
    from mal_desktop.core.io.files import load_model
    from mal_desktop.core.zoo.build import load_zoo_index

    names = load_zoo_index(zoo).names()
    assert sorted(p.name for p in zoo.iterdir()) == sorted(["tokenizer.json", "zoo.json",
                                                            *names])
    for name in names:
        assert {p.name for p in (zoo / name).iterdir()} == {"config.json", "model.safetensors",
                                                             "tokenizer.json"}
        load_model(zoo / name)  # opens: written whole
    return names


def test_the_action_builds_caches_and_opens_the_language_zoo(qtbot, window: MainWindow,
                                                             tmp_path: Path) -> None:
    assert window.actions.open_lm_demo in window.menuBar().actions()[0].menu().actions()
    dialog = _dialog(qtbot, window)
    dialog._go.click()
    assert dialog.progress_bar.isVisible()  # following the build in the worker
    ws = window.workspace
    qtbot.waitUntil(lambda: ws.base is not None and len(ws.zoo) == 2
                    and not window.jobs.runner.is_running(), timeout=600000)
    assert not shiboken6.isValid(dialog) or not dialog.isVisible()  # closed
    assert ws.base.name == "llama-w32-s0-code" and set(ws.zoo) == set(SMALL[1:])
    assert window.session.data == "python-code"  # text: curves score per token
    combo = window.dataset_combo
    assert combo.currentData() == "python-code"
    # image data sets are greyed for a language model, saying why (digits failed at Run)
    digits = combo.model().item(combo.findData("digits"))
    assert not digits.isEnabled() and digits.toolTip() == (
        "llama-w32-s0-code reads token ids: choose a text data set")
    assert combo.model().item(combo.findData("python-docstrings")).isEnabled()
    assert not window.session.is_dirty()
    step = ws.plan.steps[0]  # the example step the status bar offers to run (F5)
    assert step.source in ws.zoo and window.actions.run.isEnabled()
    assert _folder_is_whole(tmp_path / "lm-zoo") == SMALL  # cached in the user's folder
    # a curve runs right away, scored on the text per token (loss = log perplexity)
    window.grid_spin.setValue(3)
    window.runs.run()
    qtbot.waitUntil(lambda: window.runs.last_run is not None, timeout=300000)
    curve = window.runs.last_run.curve
    assert curve.dataset == "python-code" and len(curve.lambdas) == 3
    assert 1.0 < math.exp(curve.naive.loss[0]) < 320  # a perplexity, below a uniform guess
    # the Evaluate panel scores the same text, and the merge of folders (not files) too
    panel = window.views.evaluate_panel
    assert panel.selected_datasets() == ["python-code"]
    merged = panel.models_list.item(panel.models_list.count() - 1)
    assert merged.data(KEY_ROLE) == tasks.MERGED_REF and merged.flags() & ItemIsEnabled
    panel.set_checked([str(ws.base.path), tasks.MERGED_REF, "data:python-code"])
    with qtbot.waitSignal(window.jobs.runner.finished, timeout=300000) as blocker:
        window.actions.evaluate.trigger()
    result = blocker.args[0]
    assert result.errors == [] and result.computed == 2
    assert result.cells[0].metrics["loss"] == pytest.approx(curve.naive.loss[0], rel=1e-9)
    # its drill-down is per document (module files), not per token id: a 320 x 320 confusion
    # matrix over the vocabulary, its 'classes' named after files, said nothing
    panel.select_cell(0, 1)
    details = panel.details
    assert details.per_token and details.bar_plot.titleLabel.text == "perplexity"
    csv_path = details.export_csv(tmp_path / "docs.csv", "documents")
    rows = [line.split(",") for line in csv_path.read_text().splitlines()
            if line and not line.startswith("#")]
    assert rows[0] == ["document", "tokens", "perplexity", "next_token_accuracy"]
    tokens = sum(int(r[1]) for r in rows[1:])
    assert len(rows) > 2 and tokens == result.cells[0].n
    assert all(r[0].isidentifier() for r in rows[1:])  # module names, not token ids
    mean_loss = sum(int(r[1]) * math.log(float(r[2])) for r in rows[1:]) / tokens
    assert mean_loss == pytest.approx(result.cells[0].metrics["loss"], rel=1e-6)

    # built: the action opens it straight away, no dialog, no training
    window.session.mark_clean()  # (the curve's points changed: an unsaved change to keep)
    window.session.replace_workspace(None)
    events: list[str] = []
    window.jobs.progress.connect(lambda e: events.append(e.message))
    window.actions.open_lm_demo.trigger()
    qtbot.waitUntil(lambda: window.workspace is not None and window.workspace.base is not None
                    and not window.jobs.runner.is_running(), timeout=120000)
    assert window.findChild(DemoZooDialog) is None
    assert not any("training" in m for m in events)

    # `mal-desktop --demo language` opens it from the command line too (there was no way)
    from mal_desktop.gui.app import parse_args

    assert parse_args(["--demo"]).demo == "digits"
    assert parse_args(["--demo", "language"]).demo == "language"
    window.session.mark_clean()
    window.session.replace_workspace(None)
    window.files.open_at_startup([], "language")
    qtbot.waitUntil(lambda: window.workspace is not None and window.workspace.base is not None
                    and not window.jobs.runner.is_running(), timeout=120000)
    assert window.workspace.base.name == "llama-w32-s0-code"
    assert window.session.data == "python-code"


def test_cancel_leaves_the_models_it_finished_and_nothing_half_written(
        qtbot, window: MainWindow, tmp_path: Path) -> None:
    dialog = _dialog(qtbot, window)
    dialog._go.click()
    # cancel while the second model trains (its progress names it)
    qtbot.waitUntil(lambda: "llama-w32-s1-code" in dialog._status.text(), timeout=600000)
    dialog._cancel.click()
    qtbot.waitUntil(lambda: not window.jobs.runner.is_running(), timeout=60000)
    assert not shiboken6.isValid(dialog) or not dialog.isVisible()  # closed
    assert window.workspace.base is None and not window.workspace.zoo  # nothing opened
    finished = _folder_is_whole(tmp_path / "lm-zoo")
    assert finished[:1] == SMALL[:1] and len(finished) < len(SMALL)

    # the next build reuses what was finished and completes the zoo
    events: list[str] = []
    window.jobs.progress.connect(lambda e: events.append(e.message))
    _dialog(qtbot, window)._go.click()
    qtbot.waitUntil(lambda: window.workspace.base is not None
                    and not window.jobs.runner.is_running(), timeout=600000)
    assert any(m.startswith("cached llama-w32-s0-code") for m in events)
    assert _folder_is_whole(tmp_path / "lm-zoo") == SMALL
