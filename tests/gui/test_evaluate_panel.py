"""The Evaluate panel: the matrix model, a real matrix run through the window's runner, the
cache on a second run, cancel and resume, drill-down, export, and the study started from the GUI.
"""

from __future__ import annotations

import math

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from mal_desktop.core.toolkit import matrix as matrix_mod
from mal_desktop.core.toolkit.matrix import MatrixCell, MatrixResult
from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.gui import tasks
from mal_desktop.gui.dialogs.study import StudyDialog
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.models.matrix_model import (CELL_ROLE, VALUE_ROLE, MatrixSortProxy,
                                                 QtMatrixModel)
from mal_desktop.gui.settings import Settings
from mal_desktop.gui.undo import AddStepCommand, UpdateStepCommand
from mal_desktop.gui.views.evaluate_choices import KEY_ROLE
from mal_desktop.gui.views.evaluate_panel import EvaluatePanel
from mal_desktop.gui.workspace import ModelEntry, Workspace

pytestmark = pytest.mark.gui


# -- the item model on hand-made cells -------------------------------------------------------
def _cell(model: str, dataset: str, acc: float | None, loss: float = 0.5,
          error: str | None = None) -> MatrixCell:
    metrics = {} if error else {"accuracy": acc, "loss": loss, "ece": 0.1,
                                "per_class_accuracy": {"0": acc}}
    return MatrixCell(model, dataset, f"{model}-{dataset}", metrics, {}, 0 if error else 10,
                      False, None, error)


def _result(cells: list[MatrixCell]) -> MatrixResult:
    models = tuple(dict.fromkeys(c.model for c in cells))
    datasets = tuple(dict.fromkeys(c.dataset for c in cells))
    return MatrixResult(tuple({"ref": m, "name": Path(m).stem, "kind": "file", "hash": "ab" * 16}
                              for m in models),
                        tuple({"name": d, "fingerprint": "cd" * 16} for d in datasets),
                        ("accuracy", "loss", "ece", "per_class_accuracy"), tuple(cells), 0,
                        len(cells), Path("/nowhere"), "batch/softmax/classification/category")


def test_matrix_model_passes_modeltester_and_colours_sorts(qapp, qtmodeltester) -> None:
    model = QtMatrixModel()
    qtmodeltester.check(model)  # empty
    model.set_layout([("a.safetensors", "a (base)"), ("b.safetensors", "b")], ["digits", "rot"])
    qtmodeltester.check(model)  # all pending
    assert model.data(model.index(0, 1)) == "\u2026"
    model.set_cell(_cell("a.safetensors", "digits", 0.95, loss=0.2))
    assert model.data(model.index(0, 1)) == "95.0%"
    result = _result([_cell("a.safetensors", "digits", 0.95, loss=0.2),
                      _cell("a.safetensors", "rot", 0.15, loss=2.5),
                      _cell("b.safetensors", "digits", 0.55, loss=1.0),
                      _cell("b.safetensors", "rot", None, error="input shape mismatch")])
    model.set_result(result, {"a.safetensors": "a (base)"})
    qtmodeltester.check(model)
    assert model.rowCount() == 2 and model.columnCount() == 3
    assert model.data(model.index(0, 0)) == "a (base)" and model.data(model.index(1, 0)) == "b"
    assert model.headerData(1, Qt.Orientation.Horizontal) == "digits"
    assert model.data(model.index(1, 2)) == "error"
    assert "input shape mismatch" in model.data(model.index(1, 2), Qt.ItemDataRole.ToolTipRole)
    assert model.data(model.index(1, 2), Qt.ItemDataRole.BackgroundRole) is None
    assert model.data(model.index(0, 1), CELL_ROLE).metrics["accuracy"] == 0.95
    assert model.metrics() == ["accuracy", "loss", "ece"]  # per-class is for the drill-down

    def green_minus_red(row: int, col: int) -> int:
        color: QColor = model.data(model.index(row, col), Qt.ItemDataRole.BackgroundRole)
        return color.green() - color.red()

    # Accuracy: higher is greener, on its fixed 0-100 % scale across the matrix.
    assert green_minus_red(0, 1) > green_minus_red(1, 1) > green_minus_red(0, 2)
    # Loss: lower is better, so the scale flips; unbounded, it is scaled per data set (models
    # are compared on one set: a loss of 13 read green beside a 55 on another set).
    model.set_metric("loss")
    assert model.data(model.index(0, 1)) == "0.2000"
    assert green_minus_red(0, 1) > green_minus_red(1, 1)
    assert green_minus_red(0, 2) == green_minus_red(0, 1)  # the only (so best) value of rot

    proxy = MatrixSortProxy()
    proxy.setSourceModel(model)
    qtmodeltester.check(proxy)
    model.set_metric("accuracy")
    proxy.sort(2, Qt.SortOrder.AscendingOrder)  # column "rot": the error sorts below numbers
    assert [proxy.index(r, 0).data() for r in range(2)] == ["b", "a (base)"]
    proxy.sort(1, Qt.SortOrder.DescendingOrder)
    assert [proxy.index(r, 1).data(VALUE_ROLE) for r in range(2)] == [0.95, 0.55]
    # a stale row: muted text on the plain background (on the scale's colours it was
    # unreadable in the dark theme, and the colour compared numbers that no longer hold)
    model.mark_stale("a.safetensors", "the plan was edited")
    assert model.data(model.index(0, 1), Qt.ItemDataRole.BackgroundRole) is None
    assert model.data(model.index(0, 1), Qt.ItemDataRole.ForegroundRole) is not None
    assert isinstance(model.data(model.index(1, 1), Qt.ItemDataRole.BackgroundRole), QColor)
    model.mark_stopped()
    model.set_layout([("c", "c")], ["digits"])
    model.mark_stopped()
    assert model.data(model.index(0, 1)) == "not computed"


def test_perplexity_is_for_text_and_coloured_by_orders_of_magnitude(qapp) -> None:
    """An image classifier's cell offered "perplexity 2.760e+13" (exp of its loss, read by no
    one), and one linear scale over 1.07 to 5e23 made every other perplexity look best."""
    def cell(model: str, dataset: str, ppl: float) -> MatrixCell:
        return MatrixCell(model, dataset, f"{model}-{dataset}",
                          {"accuracy": 0.5, "loss": math.log(ppl), "perplexity": ppl}, {}, 10,
                          False, None, None)

    model = QtMatrixModel()
    cells = [cell("a", "digits", 3e13), cell("a", "python-code", 30.0),
             cell("b", "python-code", 3e12), cell("c", "python-code", 5e23)]
    model.set_layout([("a", "a"), ("b", "b"), ("c", "c")], ["digits", "python-code"])
    for c in cells:
        model.set_cell(c)
    assert "perplexity" in model.metrics()
    model.set_metric("perplexity")
    assert model.data(model.index(0, 1)) == "\u2013"  # not for an image data set
    assert model.data(model.index(0, 1), Qt.ItemDataRole.BackgroundRole) is None

    def red(row: int) -> int:
        return model.data(model.index(row, 2), Qt.ItemDataRole.BackgroundRole).red()

    # 30 best, 5e23 worst, 3e12 half way in orders of magnitude (linearly: as good as 30)
    assert red(1) - red(0) > 20 and red(2) - red(1) > 20
    images = QtMatrixModel()
    images.set_layout([("a", "a")], ["digits"])
    images.set_cell(cells[0])
    assert "perplexity" not in images.metrics()  # nothing it means anything for


def test_a_data_set_the_model_does_not_read_shows_n_a_not_a_failure(qtbot) -> None:
    panel = EvaluatePanel(Workspace())
    qtbot.addWidget(panel)
    reason = ("model a reads images or features, not token ids; dataset python-code is text, "
              "for language models: choose an image or feature dataset")
    other = MatrixCell("a.safetensors", "python-code", "k", error=reason, mismatch=True)
    panel.set_result(_result([_cell("a.safetensors", "digits", 0.9), other]))
    model = panel.model
    assert model.data(model.index(0, 2)) == "n/a"
    assert model.data(model.index(0, 2), Qt.ItemDataRole.ToolTipRole).endswith(
        f"not applicable: {reason}")
    summary = panel.summary.text()
    assert "1 n/a (the model reads other data)" in summary and "failed" not in summary


def test_a_narrow_matrix_keeps_its_values_in_view(qtbot) -> None:
    """Long model names in a narrow panel: the name column gives way (elided, whole in the
    tooltip) and the value columns stay whole; the names took all the width before."""
    panel = EvaluatePanel(Workspace())
    qtbot.addWidget(panel)
    names = {f"{m}.safetensors": f"llama-w128-s{m}-docstrings-long-name" for m in "ab"}
    cells = [_cell(f"{m}.safetensors", d, 0.5) for m in "ab" for d in ("digits", "rot")]
    panel.show()
    panel.resize(700, 320)
    panel._names = names
    panel.set_result(_result(cells))
    panel.lists_button.setChecked(True)  # the lists back: the matrix narrow again
    panel.splitter.setSizes([150, 260, 290])
    qtbot.wait(50)
    table, header = panel.table, panel.table.horizontalHeader()
    assert header.sectionSize(0) < table.sizeHintForColumn(0)  # the names gave way
    for col in (1, 2):
        assert header.sectionSize(col) >= table.sizeHintForColumn(col)
    assert sum(header.sectionSize(c) for c in range(3)) <= table.viewport().width()
    panel.resize(1400, 320)
    panel.splitter.setSizes([150, 1100, 150])  # room again: the names are whole
    qtbot.wait(50)
    assert header.sectionSize(0) >= table.sizeHintForColumn(0)
    header.resizeSection(1, 220)  # the user widens a value column: resizing keeps it
    panel.resize(1390, 320)
    qtbot.wait(50)
    assert header.sectionSize(1) == 220


def test_model_names_stay_in_view_while_many_data_sets_scroll(qtbot) -> None:
    """Eight data sets in a narrow panel: a cell in the last column was scrolled into view with
    the names gone (a column of numbers and no model). The names are frozen over the first
    column: they stay put, the selected cell lies clear of them, and they sort on a click."""
    panel = EvaluatePanel(Workspace())
    qtbot.addWidget(panel)
    sets = [f"digits-variant-{k}" for k in range(8)]
    panel._names = {f"{m}.safetensors": f"mlp-w64-s{m}" for m in "abc"}
    cells = [_cell(f"{m}.safetensors", d, 0.1 * (k + 1)) for m in "abc"
             for k, d in enumerate(sets)]
    panel.show()
    panel.resize(700, 320)
    panel.set_result(_result(cells))
    panel.splitter.setSizes([150, 300, 250])
    qtbot.wait(50)
    table, names = panel.table, panel.table.names
    assert table.horizontalScrollBar().maximum() > 0  # the values do not fit: they scroll
    panel.select_cell(1, len(sets))
    qtbot.wait(50)
    assert table.horizontalScrollBar().value() > 0
    assert names.isVisible() and names.x() <= table.frameWidth() + 1
    assert names.width() == table.columnWidth(0) >= 96
    shown = [names.model().index(r, 0).data() for r in range(3)]
    assert shown == ["mlp-w64-sa", "mlp-w64-sb", "mlp-w64-sc"]
    assert [c for c in range(len(sets) + 1) if not names.isColumnHidden(c)] == [0]
    cell = table.visualRect(table.currentIndex())
    assert cell.left() >= table.columnWidth(0) and cell.right() <= table.viewport().width()
    assert names.selectionModel() is table.selectionModel()
    qtbot.mouseClick(names.horizontalHeader().viewport(), Qt.MouseButton.LeftButton)
    qtbot.mouseClick(names.horizontalHeader().viewport(), Qt.MouseButton.LeftButton)
    assert table.horizontalHeader().sortIndicatorSection() == 0
    assert [names.model().index(r, 0).data() for r in range(3)] == shown[::-1]


def test_huge_metric_values_read_in_powers_of_ten() -> None:
    from mal_desktop.gui.models.matrix_model import format_value

    assert format_value("perplexity", 44579923588614.156) == "4.458e+13"
    assert format_value("loss", 0.27171) == "0.2717" and format_value("accuracy", 0.5) == "50.0%"


def test_a_result_widens_the_matrix_at_the_details_expense(qtbot) -> None:
    """In a narrow panel the splitter shrank the matrix and the cell details alike and the
    values were cut off; a new result takes the matrix's room from the details (which show
    nothing before a cell is selected), down to their minimum."""
    panel = EvaluatePanel(Workspace())
    qtbot.addWidget(panel)
    panel.show()
    panel.resize(760, 320)
    panel.splitter.setSizes([150, 150, 460])
    qtbot.wait(50)
    details_before = panel.splitter.sizes()[2]
    panel._names = {f"{m}.safetensors": f"llama-w128-s{m}-code" for m in "ab"}
    panel.set_result(_result([_cell(f"{m}.safetensors", d, 0.5) for m in "ab"
                              for d in ("digits", "rot")]))
    qtbot.wait(50)
    table, header = panel.table, panel.table.horizontalHeader()
    assert panel.splitter.sizes()[2] < details_before
    assert panel.splitter.sizes()[2] >= panel.details.minimumSizeHint().width()
    for col in range(3):  # every column whole: the room was there
        assert header.sectionSize(col) >= table.sizeHintForColumn(col), col


def test_a_result_folds_the_lists_away_when_the_matrix_needs_their_room(qtbot) -> None:
    """Sharing the bottom of a 1280 x 720 window, the panel showed the lists, the cell details
    and, between them, the model names and one column of values. When the details have given
    all they can, the lists fold away (their choice is made); the Lists button brings them
    back."""
    panel = EvaluatePanel(Workspace())
    qtbot.addWidget(panel)
    panel.show()
    panel.resize(630, 320)
    qtbot.wait(50)
    panel._names = {f"{m}.safetensors": f"mlp-w64-s{m}-permuted" for m in "abcd"}
    sets = ("digits", "digits-permuted", "digits-rot90", "digits-inverted")
    panel.set_result(_result([_cell(f"{m}.safetensors", d, 0.5) for m in "abcd" for d in sets]))
    qtbot.wait(50)
    assert not panel.lists.isVisible() and not panel.lists_button.isChecked()
    assert panel.lists_button.text() == "\u25b8 Lists"  # says it unfolds
    header, table = panel.table.horizontalHeader(), panel.table
    shown = [c for c in range(5) if header.sectionViewportPosition(c) + header.sectionSize(c)
             <= table.viewport().width()]
    assert len(shown) >= 3, shown  # the names and at least two data sets in view
    panel.lists_button.click()
    qtbot.wait(50)
    assert panel.lists.isVisible() and panel.splitter.sizes()[0] > 0


def test_panel_choices_hints_and_strict_json_export(qtbot, tmp_path: Path) -> None:
    ws = Workspace()
    panel = EvaluatePanel(ws)
    qtbot.addWidget(panel)
    assert panel.selected_datasets() == ["digits"]  # only the base task ticked at first
    # the curves' data set is followed (a language zoo opens with a text one) until the user
    # ticks data sets here
    panel.follow_data("python-code")
    assert panel.selected_datasets() == ["python-code"]
    panel.follow_data("mine.npz")  # a project's own data file: offered too, and followed
    assert panel.selected_datasets() == ["mine.npz"]
    panel.datasets_list.item(0).setCheckState(Qt.CheckState.Checked)  # the user's tick
    panel.follow_data("digits-rot90")
    assert panel.selected_datasets() == ["digits", "mine.npz"]
    panel.set_checked(["data:digits"])
    assert panel.prepare_run() is None and "Tick at least one model" in panel.summary.text()
    assert not panel.export_button.isEnabled()
    # A model that only lives in memory cannot be referenced by the matrix: shown, disabled.
    ws.set_base(ModelEntry("in-memory", None, object(), object()))
    item = panel.models_list.item(0)
    assert item.text() == "in-memory (base)" and not item.flags() & Qt.ItemFlag.ItemIsEnabled
    assert panel.selected_models() == []
    ws.push(AddStepCommand(ws.plan, AssemblyStep("d", "layers.1", "layers.1", 0.5)))
    merged = panel.models_list.item(1)  # offered with the first step, but it cannot assemble
    assert merged.text() == tasks.MERGED_NAME
    assert not merged.flags() & Qt.ItemFlag.ItemIsEnabled and "on disk" in merged.toolTip()
    cells = [_cell("a.safetensors", "digits", float("nan"), loss=float("inf")),
             _cell("b.safetensors", "digits", 0.9)]
    panel.set_result(_result(cells))
    assert panel.export_button.isEnabled() and "2 cells" in panel.summary.text()

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    doc = json.loads(panel.export_json(tmp_path / "m.json").read_text(),
                     parse_constant=no_constants)
    assert doc["cells"][0]["metrics"]["accuracy"] is None and doc["cells"][1]["n"] == 10
    assert panel.model.data(panel.model.index(0, 1)) == "\u2013"  # NaN shown as a dash


# -- the window, on the session's small zoo -----------------------------------------------------
@pytest.fixture
def window(qtbot, settings: Settings, small_zoo, tmp_path: Path) -> Iterator[MainWindow]:
    settings.demo_offered = True
    w = MainWindow(settings)
    w.show()
    qtbot.waitExposed(w)
    w.start_up()
    qtbot.waitUntil(lambda: w.workspace is not None and not w.jobs.runner.is_running(), timeout=60000)
    paths = [small_zoo.path_of(n) for n in ("mlp-w32-s0", "mlp-w32-s1", "mlp-w64-s0")]
    w.files.open_paths([str(p) for p in paths])
    ws = w.workspace
    qtbot.waitUntil(lambda: ws.base is not None and len(ws.zoo) == 2
                    and not w.jobs.runner.is_running(), timeout=30000)
    w.views.evaluate_panel.cache_dir = tmp_path / "eval-cache"
    yield w
    w.session.mark_clean()  # nothing to ask about when the fixture closes the window
    if shiboken6.isValid(w):
        w.shutdown()
        w.close()
        shiboken6.delete(w)


def _evaluate(qtbot, w: MainWindow) -> MatrixResult:
    with qtbot.waitSignal(w.jobs.runner.finished, timeout=60000) as blocker:
        w.actions.evaluate.trigger()
    result = blocker.args[0]
    assert isinstance(result, MatrixResult)
    return result


def test_matrix_run_colours_drills_down_exports_and_hits_the_cache(
        qtbot, window: MainWindow, small_zoo, tmp_path: Path) -> None:
    w, ws, panel = window, window.workspace, window.views.evaluate_panel
    assert w.actions.evaluate.shortcut().toString() == "Ctrl+E"
    assert w.actions.save_merged.shortcut().toString() != "Ctrl+E"  # no ambiguous shortcut
    ws.push(AddStepCommand(ws.plan, AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.5)))
    keys = [panel.models_list.item(i).data(Qt.ItemDataRole.UserRole + 1)
            for i in range(panel.models_list.count())]
    assert keys[-1] == tasks.MERGED_REF  # offered once the plan has a step
    base = str(small_zoo.path_of("mlp-w32-s0"))
    panel.set_checked([base, tasks.MERGED_REF, "data:digits"])
    cells: list[MatrixCell] = []
    w.jobs.runner.progress.connect(lambda e: cells.append(e.payload)
                              if isinstance(e.payload, MatrixCell) else None)

    result = _evaluate(qtbot, w)
    assert (result.computed, result.cached, result.errors) == (2, 0, [])
    assert len(cells) == 2  # the table filled live, one cell per event
    model = panel.model
    assert model.rowCount() == 2 and model.columnCount() == 2
    assert model.data(model.index(1, 0)) == tasks.MERGED_NAME
    acc = [model.data(model.index(r, 1), VALUE_ROLE) for r in range(2)]
    assert all(0.5 < a <= 1.0 for a in acc)  # trained models well above chance (10 %)
    for r in range(2):
        assert isinstance(model.data(model.index(r, 1), Qt.ItemDataRole.BackgroundRole), QColor)
    assert "computed" in panel.summary.text()

    # Drill-down: per-class bars and the confusion matrix from the cell's per-sample scores.
    panel.select_cell(0, 1)
    details = panel.details
    counts = details.counts
    assert counts is not None and counts.shape == (10, 10) and counts.sum() == result.cells[0].n
    assert np.trace(counts) / counts.sum() == pytest.approx(acc[0])
    assert details.image.image is not None and details.image.image.shape == (10, 10)
    heights = details.bars.opts["height"]
    assert len(heights) == 10 and np.nanmean(details.accuracy) == pytest.approx(
        np.mean(list(result.cells[0].metrics["per_class_accuracy"].values())))
    n_labels = len(details.count_labels)
    assert n_labels >= 10  # counts printed in the cells (at least the diagonal)
    details._apply_colors()  # what a theme change does: redraw, same labels, not doubled
    assert len(details.count_labels) == n_labels
    assert details.conf_plot.getAxis("bottom")._tickLevels[0][0] == (0, "0")
    # The drill-down's CSV names the model by its hash and the data set by its fingerprint.
    cell_csv = details.export_csv(tmp_path / "cell.csv", "accuracy").read_text()
    first = panel.model.result.models[0]
    assert f"# model_sha256: {first['hash']}" in cell_csv and first["hash"]
    assert f"# model_ref: {first['ref']}" in cell_csv and "# dataset_fingerprint: " in cell_csv

    # Exports are atomic text files with every cell.
    csv_path = panel.export_csv(tmp_path / "m.csv")
    lines = csv_path.read_text().splitlines()
    comments = [line for line in lines if line.startswith("# ")]
    table = [line for line in lines if not line.startswith("# ")]
    assert len(table) == 3 and "accuracy" in table[0]  # header + one line per cell
    # provenance first: which models (with their hashes), data, metrics, which mal_desktop
    keys = [line[2:].split(":", 1)[0] for line in comments]
    assert keys == ["models", "datasets", "metrics", "pipeline", "evaluator_version",
                    "mal_desktop"]
    result = panel.model.result
    assert all(m["hash"] in comments[0] for m in result.models)
    doc = json.loads(panel.export_json(tmp_path / "m.json").read_text())
    assert len(doc["cells"]) == 2 and doc["computed"] == 2 and doc["mal_desktop"]

    # Second run: every cell from the cache, nothing computed and not even the plan assembled.
    cache = panel.model.result.cache_dir
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    stages: list[str] = []
    w.jobs.runner.progress.connect(lambda e: stages.append(e.stage))
    again = _evaluate(qtbot, w)
    assert (again.computed, again.cached) == (0, 2)
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert "align" not in stages and "preflight" not in stages
    assert [c.metrics["accuracy"] for c in again.cells] == acc
    assert "0 computed, 2 from the cache" in panel.summary.text()

    # The merged cell after a plan edit: its drill-down and its exports say it is stale and
    # which plan it measured (they showed the old numbers as current).
    panel.select_cell(1, 1)
    assert "Stale" not in details.header.text()
    ws.push(UpdateStepCommand(ws.plan, 0, {"lam": 0.3}))
    assert "Stale: the plan was edited" in details.header.text()
    merged_csv = details.export_csv(tmp_path / "merged.csv", "accuracy").read_text()
    assert "# stale: the plan was edited after this evaluation" in merged_csv
    assert "# plan_steps: 1. mlp-w32-s1:layers.1 -> layers.1 lambda=0.5 chain linear" \
        in merged_csv


def test_your_own_data_is_offered_and_evaluated(qtbot, window: MainWindow,
                                                 tmp_path: Path) -> None:
    """The Data sets list offered registered names only: a project's own .npz, or any file of
    the user's, could be scored by the CLI but not here. Own data is offered below them (a
    project's data ticked, as the curve's is), labelled by its file name, and evaluated."""
    from mal_desktop.core.evaluate.datasets import load_dataset

    w, panel = window, window.views.evaluate_panel
    digits = load_dataset("digits")
    own = tmp_path / "my-digits.npz"
    np.savez(own, x=digits.x_test[:50].numpy(), y=digits.y_test[:50].numpy())
    w.session.set_data(str(own))  # what opening a project whose data is a file does
    keys = [panel.datasets_list.item(i).data(KEY_ROLE)
            for i in range(panel.datasets_list.count())]
    assert keys[-1] == f"data:{own}"
    item = panel.datasets_list.item(len(keys) - 1)
    assert item.text() == "my-digits.npz" and item.toolTip() == str(own)
    assert panel.selected_datasets() == [str(own)]  # followed, alone, as the curve's
    panel.add_dataset(f"text:{tmp_path}")  # the Add... button's folder of text
    assert panel.datasets_list.item(len(keys)).text() == f"text: {tmp_path.name}"
    panel.set_checked([w.workspace.base.path_text, f"data:{own}"])
    result = _evaluate(qtbot, w)
    assert result.errors == [] and result.cells[0].n == 50
    assert panel.model.headerData(1, Qt.Orientation.Horizontal) == "my-digits.npz"
    assert panel.model.cell(0, 1).metrics["accuracy"] > 0.5  # a digits model on digits


def test_cancel_mid_run_keeps_finished_cells_and_resumes(qtbot, window: MainWindow,
                                                          monkeypatch) -> None:
    w, panel = window, window.views.evaluate_panel
    reached, release = threading.Event(), threading.Event()
    real = matrix_mod.run_pipeline
    calls = []

    def gated(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second cell waits (in the worker) until the test cancelled
            reached.set()
            release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(matrix_mod, "run_pipeline", gated)
    panel.set_checked([e.path_text for e in [w.workspace.base, *w.workspace.zoo.values()]]
                      + ["data:digits"])
    assert len(panel.selected_models()) == 3
    w.actions.evaluate.trigger()
    qtbot.waitUntil(reached.is_set, timeout=30000)
    with qtbot.waitSignal(w.jobs.runner.cancelled, timeout=30000):
        w.jobs.cancel()  # what the Cancel button and Esc do
        release.set()
    qtbot.waitUntil(lambda: len(panel.model.finished_cells()) == 2, timeout=5000)
    model = panel.model
    assert model.result is None and not panel.export_button.isEnabled()
    assert model.data(model.index(2, 1)) == "not computed"
    assert "Stopped: 2 of 3 cells done (2 computed, 0 from the cache)" in panel.summary.text()
    assert len(list(panel.cache_dir.glob("*.json"))) == 2  # finished cells stay cached

    result = _evaluate(qtbot, w)  # resumes: only the missing cell is computed
    assert (result.computed, result.cached) == (1, 2)
    assert model.data(model.index(2, 1)).endswith("%")
    # a resumed run that stops counts what it took from the cache as such (it said "Stopped
    # after 3 cells" as if it had computed them)
    panel.run_stopped()
    assert "3 of 3 cells done (1 computed, 2 from the cache)" in panel.summary.text()


def test_small_study_runs_from_the_gui_and_links_the_report(qtbot, window: MainWindow,
                                                            tmp_path: Path,
                                                            monkeypatch) -> None:
    from mal_desktop.core.study.report import FIGURES

    demo = tmp_path / "demo-zoo"
    monkeypatch.setenv("MAL_ZOO_DIR", str(demo))
    a = window.actions
    run_menu = next(m.menu() for m in window.menuBar().actions() if m.text() == "&Run")
    assert a.run_study.isEnabled() and a.run_study in run_menu.actions()
    assert a.evaluate in run_menu.actions()
    out = tmp_path / "study"
    dialog = StudyDialog(window, out)  # what Run MAL Study... asks (folder, quick mode)
    dialog.small.setChecked(True)
    assert dialog.out_dir() == out and dialog.is_small()
    dialog.deleteLater()
    with qtbot.waitSignal(window.jobs.runner.finished, timeout=120000) as blocker:
        window.evaluation.run_study(out, small=True)
    result = blocker.args[0]
    assert result.report_path == out / "report.md" and result.report_path.is_file()
    assert (out / "small-zoo" / "zoo.json").is_file() and not demo.exists()  # demo zoo untouched
    for name, _caption in FIGURES.values():  # drawn in the GUI thread after the job
        assert (out / name).stat().st_size > 0
    box = window.evaluation.study_message
    qtbot.waitUntil(box.isVisible, timeout=5000)
    assert (out / "report.md").as_uri() in box.text()
    assert box.text().count("<li>law ") == len(result.data["laws"])
    assert "A quick run: two seeds per configuration are too few" in box.text()
    box.close()


def test_real_study_job_cancels_from_the_gui(qtbot, window: MainWindow, tmp_path: Path) -> None:
    out = tmp_path / "study"
    window.evaluation.run_study(out, small=True)
    qtbot.waitUntil(lambda: window.progress_bar.isVisible(), timeout=5000)
    with qtbot.waitSignal(window.jobs.runner.cancelled, timeout=30000):
        window.jobs.cancel()
    assert not (out / "report.md").exists()
