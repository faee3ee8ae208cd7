"""The main flow from the keyboard, and panels that agree on the selected step.

Add Step adds exactly the selected zoo layer -> selected base layer pair; the Menu key's context
menu acts on the selected row; after Run, reopening, New Project and Cancel the curve, the
diagnostics and the Evaluate panel show the same step (or nothing); results computed before a
plan edit are marked stale.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtWidgets import QApplication, QMenu

from test_app import Asked, asked, dispose, ready, window  # noqa: F401 - fixtures

from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.gui import tasks
from mal_desktop.gui.dialogs import ask
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.undo import UpdateStepCommand

pytestmark = pytest.mark.gui


def opened(qtbot, w: MainWindow, files: dict[str, Path]) -> MainWindow:
    ready(qtbot, w)
    w.files.open_paths([str(files["base_mlp"]), str(files["zoo_mlp"])])
    qtbot.waitUntil(lambda: w.workspace.base is not None and len(w.workspace.zoo) == 1
                    and not w.jobs.is_busy(), timeout=60000)
    return w


def menu_key(view) -> None:
    """What the platform does for the Menu key: a keyboard context-menu event to the window,
    which Qt hands to the focus widget at the position the widget reports."""
    window = view.window()
    window.activateWindow()
    view.setFocus()
    QApplication.processEvents()
    # A stray focus (a search box) would open its own, unrecordable menu and block the test.
    assert QApplication.focusWidget() is view, QApplication.focusWidget()
    event = QContextMenuEvent(QContextMenuEvent.Reason.Keyboard, QPoint(0, 0), QPoint(0, 0))
    QApplication.sendEvent(view.window().windowHandle(), event)


def popped_menu() -> list[str]:
    """The context menu open now (closed after reading its entries)."""
    menu = QApplication.activePopupWidget()
    assert isinstance(menu, QMenu)
    texts = [a.text() for a in menu.actions()]
    menu.close()
    QApplication.processEvents()
    return texts


def run_selected(qtbot, w: MainWindow) -> None:
    with qtbot.waitSignal(w.runs.runFinished, timeout=60000):
        w.actions.run.trigger()
    qtbot.waitUntil(lambda: not w.jobs.is_busy(), timeout=10000)


# -- keyboard --------------------------------------------------------------------------------
def test_add_step_adds_exactly_the_selected_pair(qtbot, window: MainWindow,
                                                 model_files) -> None:
    w = opened(qtbot, window, model_files)
    ws, views = w.workspace, w.views
    a = w.actions.add_step
    assert a.shortcut().toString() == "Ctrl+Return" and a in w.toolbar.actions()
    assert any(a in m.actions() for m in w.menuBar().findChildren(QMenu))
    n = len(ws.plan.steps)
    a.trigger()  # nothing selected yet: nothing added, the status bar says what to select
    assert len(ws.plan.steps) == n and "select a weight layer" in w.statusBar().currentMessage()
    zoo = views.zoo_tabs.current_pane()
    zoo.select("layers.1")
    views.base_pane.select("layers.0")
    assert views.selected_pair() == AssemblyStep("zoo_mlp", "layers.1", "layers.0")
    assert "zoo_mlp:layers.1 \u2192 layers.0" in a.toolTip()
    a.trigger()
    assert len(ws.plan.steps) == n + 1
    added = ws.plan.steps[-1]
    assert (added.source, added.source_layer, added.base_layer) == \
        ("zoo_mlp", "layers.1", "layers.0")
    assert w.statusBar().currentMessage().startswith("\u2713 Added step")
    ws.undo_stack.undo()  # one undoable command
    assert len(ws.plan.steps) == n


def test_every_panel_has_a_shortcut(qtbot, window: MainWindow, model_files) -> None:
    w = opened(qtbot, window, model_files)
    views = w.views
    targets = {"focus_base": views.base_pane.view, "focus_plan": views.assembly_panel.view,
               "focus_curve": views.curve_plot.grid, "focus_diagnostics": views.diagnostics.grid,
               "focus_evaluate": views.evaluate_panel.table,
               "focus_zoo": views.zoo_tabs.current_pane().view}
    keys = set()
    for key, widget in targets.items():
        action = w.actions[key]
        keys.add(action.shortcut().toString())
        action.trigger()
        assert widget.hasFocus() or QApplication.focusWidget() is widget, key
    assert keys == {f"Alt+{i}" for i in range(1, 7)}


def test_menu_key_acts_on_the_selected_row(qtbot, window: MainWindow, model_files) -> None:
    w = opened(qtbot, window, model_files)
    zoo = w.views.zoo_tabs.current_pane()
    for path in ("layers.0", "layers.1"):
        zoo.select(path)
        menu_key(zoo.view)
        entries = popped_menu()
        assert entries[0] == path and "Merge into base layer" in entries  # not the row below
    # The step list too: the Menu key opens the menu of the selected step.
    ws = w.workspace
    for source in ("layers.0", "layers.1"):
        ws.add_step(AssemblyStep("zoo_mlp", source, source))
    ws.select_step(0)
    menu_key(w.views.assembly_panel.view)
    assert "Remove Step" in popped_menu() and ws.selected_step == 0


def test_the_edit_menu_moves_and_removes_the_selected_step(qtbot, window: MainWindow,
                                                            model_files) -> None:
    """Remove and move lived only as tool buttons and keys of the step list; the Edit menu,
    where users look for them, now lists them (their keys still act in the list only: Delete
    in a search box deletes a character, not a step)."""
    w = opened(qtbot, window, model_files)
    ws = w.workspace
    edit = next(m.menu() for m in w.menuBar().actions() if m.text() == "&Edit")
    entries = {a.text(): a for a in edit.actions()}
    assert {"Move Step Up", "Move Step Down", "Remove Step"} <= entries.keys()
    assert entries["Remove Step"].shortcut().toString() == "Del"
    for source in ("layers.0", "layers.1"):
        ws.add_step(AssemblyStep("zoo_mlp", source, source))
    ws.select_step(1)
    entries["Move Step Up"].trigger()
    assert [s.source_layer for s in ws.plan.steps] == ["layers.1", "layers.0"]
    search = w.views.base_pane.search
    search.setFocus()
    search.setText("layers")
    qtbot.keyClick(search, Qt.Key.Key_Home)
    qtbot.keyClick(search, Qt.Key.Key_Delete)
    assert search.text() == "ayers" and len(ws.plan.steps) == 2
    entries["Remove Step"].trigger()
    assert [s.source_layer for s in ws.plan.steps] == ["layers.0"]


# -- panels agree ------------------------------------------------------------------------------
def test_panels_show_the_selected_step_after_run_edit_and_cancel(qtbot, window: MainWindow,
                                                                 model_files) -> None:
    w = opened(qtbot, window, model_files)
    ws, views = w.workspace, w.views
    combo = w.dataset_combo  # text is greyed for an image model, image data offered
    text = combo.findData("python-code")
    assert text >= 0 and not combo.model().item(text).isEnabled()
    assert "reads images or features" in combo.model().item(text).toolTip()
    assert combo.model().item(combo.findData("digits")).isEnabled()
    # a folder of text from a project reads as text, greyed for this image model ("docs"
    # alone read like an image data set); the whole spec is its tooltip
    spec = f"text:{model_files['base_mlp'].parent / 'docs'};context=32"
    w.session.set_data(spec)
    item = combo.model().item(combo.findData(spec))
    assert item.text() == "text: docs" and not item.isEnabled()
    assert "reads images or features" in item.toolTip()
    w.session.set_data("digits")
    for source in ("layers.0", "layers.1"):
        assert ws.add_step(AssemblyStep("zoo_mlp", source, source, 0.3)).ok
    w.grid_spin.setValue(3)
    ws.select_step(0)
    run_selected(qtbot, w)
    curve, diag = views.curve_plot, views.diagnostics
    # After Run, both panels show the step that ran (the run assembled both steps).
    assert curve.title_text().startswith("Step 1: zoo_mlp:layers.0")
    assert "\u03bb 0 =" not in curve.title_text()  # step 1 starts from the base itself
    assert diag.current is not None and diag.current.label == ws.plan.steps[0].label
    assert "Step 1:" in diag._header.text()
    assert curve.lambda_value() == pytest.approx(0.3) and "\u03bb = 0.30" in curve._legend.text()
    # Another step: its own diagnostics, and no curve of step 1 under its name.
    ws.select_step(1)
    assert curve.title_text().startswith("Step 2: zoo_mlp:layers.1")
    assert curve.series_data("aligned", "loss")[0].size == 0
    assert "Not run yet" in curve.summary_text()
    assert diag.current.label == ws.plan.steps[1].label
    assert curve._provenance["at lambda 0"] == ("the base model with step 1 of the plan "
                                                 "merged first")  # what its CSV says
    # ... and what its title says: its curve does not start at the base's own loss
    assert curve.title_text().endswith("\u03bb 0 = base + step 1")
    ws.select_step(0)
    assert curve.series_data("aligned", "loss")[0].size == 3 and "Stale" not in curve.summary_text()
    assert curve._provenance["at lambda 0"] == "the base model"
    # A lambda edit of this step moves the line and keeps the curve fresh (a curve sweeps all
    # lambdas); an edit of its alignment makes it stale, in both panels.
    ws.push(UpdateStepCommand(ws.plan, 0, {"lam": 0.7}))
    assert curve.lambda_value() == pytest.approx(0.7) and "Stale" not in curve.summary_text()
    ws.push(UpdateStepCommand(ws.plan, 0, {"align": "local"}))
    assert "Stale" in curve.summary_text() and "Stale" in diag._header.text()
    assert curve.series_data("aligned", "loss")[0].size == 3  # kept, marked, not erased
    ws.undo_stack.undo()
    assert "Stale" not in curve.summary_text()
    # Cancel keeps the last finished curve instead of leaving empty axes.
    finished = curve.series_data("aligned", "loss")[1].copy()
    w.runs.run()
    qtbot.waitUntil(lambda: w.jobs.is_running(), timeout=5000)
    w.jobs.cancel()
    qtbot.waitUntil(lambda: not w.jobs.is_busy(), timeout=60000)
    assert w.runs.live is None
    assert list(curve.series_data("aligned", "loss")[1]) == pytest.approx(list(finished))
    assert curve.title_text().startswith("Step 1:") and diag.current is not None


def test_reopen_and_new_project_leave_no_old_step_behind(qtbot, window: MainWindow,
                                                         model_files, asked: Asked,
                                                         tmp_path: Path) -> None:
    w = opened(qtbot, window, model_files)
    ws, views = w.workspace, w.views
    for source, lam in (("layers.0", 0.5), ("layers.1", 0.3)):
        assert ws.add_step(AssemblyStep("zoo_mlp", source, source, lam)).ok
    w.grid_spin.setValue(3)
    ws.select_step(0)
    run_selected(qtbot, w)
    ws.select_step(1)
    project = tmp_path / "p.malproj"
    assert w.files.write_project(project)
    ws.select_step(0)
    w.files.open_project(project)
    qtbot.waitUntil(lambda: not w.jobs.is_busy() and ws.base is not None, timeout=60000)
    curve = views.curve_plot
    assert ws.selected_step == 1
    assert curve.title_text().startswith("Step 2: zoo_mlp:layers.1")
    assert curve.lambda_value() == pytest.approx(0.3)  # the line where its label says
    assert "\u03bb = 0.30" in curve._legend.text()
    assert all(line.isVisible() for line in curve.lambda_lines)
    assert views.diagnostics.current is None  # results of the old session are gone
    # New Project: nothing of the old plan anywhere.
    panel = views.evaluate_panel
    panel.model.set_layout([(tasks.MERGED_REF, tasks.MERGED_NAME)], ["digits"])
    asked.answers["unsaved_changes"] = ask.DISCARD
    w.files.new_project()
    assert panel.model.rowCount() == 0 and panel.model.result is None
    assert curve.title_text() == "Interpolation curve"
    assert not any(line.isVisible() for line in curve.lambda_lines)
    assert views.diagnostics.current is None


def test_a_plan_edit_marks_the_merged_evaluation_stale(qtbot, window: MainWindow,
                                                       model_files) -> None:
    w = opened(qtbot, window, model_files)
    ws, panel = w.workspace, w.views.evaluate_panel
    assert ws.add_step(AssemblyStep("zoo_mlp", "layers.1", "layers.1")).ok
    panel.model.set_layout([(str(model_files["base_mlp"]), "base"),
                            (tasks.MERGED_REF, tasks.MERGED_NAME)], ["digits"])
    assert not panel.model.stale_reason(1)
    ws.push(UpdateStepCommand(ws.plan, 0, {"lam": 0.9}))
    assert "plan was edited" in panel.model.stale_reason(1)
    assert not panel.model.stale_reason(0)  # the base model does not depend on the plan
    assert "(stale)" in panel.model.index(1, 0).data()
    assert "stale" in panel.summary.text()
    assert panel.model.index(1, 0).data(Qt.ItemDataRole.ForegroundRole) is not None


def test_results_of_a_replaced_base_or_reloaded_donor_read_stale(qtbot, window: MainWindow,
                                                                  model_files) -> None:
    """Opening another base kept the old base's curve and diagnostics on screen as current
    (results were keyed on the plan's steps only). A result now remembers the loaded models it
    ran on: a new base, or a donor loaded again, marks it stale in both panels, saying why."""
    w = opened(qtbot, window, model_files)
    ws, views = w.workspace, w.views
    curve, diag = views.curve_plot, views.diagnostics
    assert ws.add_step(AssemblyStep("zoo_mlp", "layers.1", "layers.1")).ok
    w.grid_spin.setValue(3)
    run_selected(qtbot, w)
    assert "Stale" not in curve.summary_text() and "Stale" not in diag._header.text()
    ws.add_zoo(ws.base)  # another zoo model (a file already open): this step's results hold
    assert "Stale" not in curve.summary_text()
    ws.remove_zoo(ws.base.name)

    w.files.load_models([tasks.LoadRequest("zoo", "zoo_mlp", str(model_files["zoo_mlp"]))])
    qtbot.waitUntil(lambda: not w.jobs.is_busy() and "Stale" in curve.summary_text(),
                    timeout=60000)
    assert "zoo model zoo_mlp was reloaded" in curve.summary_text()
    assert "Stale" in diag._header.text()
    run_selected(qtbot, w)
    assert "Stale" not in curve.summary_text()

    w.files.load_models([tasks.LoadRequest("base", "other", str(model_files["zoo_mlp"]))])
    qtbot.waitUntil(lambda: not w.jobs.is_busy() and ws.base.name == "other", timeout=60000)
    assert "the base model was replaced" in curve.summary_text()
    assert "Stale" in diag._header.text()
    assert curve.series_data("aligned", "loss")[0].size == 3  # kept, marked, not erased


def test_tab_walks_the_panels_in_screen_order(qtbot, window: MainWindow, model_files) -> None:
    """Tab went from the base tree to the plan, the plots and the Evaluate panel, and only then
    to the zoo trees beside the base (they were placed last), and into a tree before its
    search box above it: the chain now follows the screen, left to right, then the bottom."""
    w = opened(qtbot, window, model_files)
    views = w.views
    zoo = views.zoo_tabs.current_pane()
    walk, widget = [], w.toolbar
    for _ in range(5000):
        widget = widget.nextInFocusChain()
        if widget.focusPolicy() & Qt.FocusPolicy.TabFocus and widget.isVisible():
            walk.append(widget)
        if widget is w.toolbar:
            break
    areas = [views.base_pane.search, views.base_pane.view, zoo.search, zoo.view,
             views.assembly_panel, views.curve_plot, views.diagnostics, views.evaluate_panel]
    first = [next(i for i, x in enumerate(walk) if x is area or area.isAncestorOf(x))
             for area in areas]
    assert first == sorted(first), first
