"""AssemblyPanel and QtPlanModel: every edit is an undo command; undo/redo restore exactly."""

from __future__ import annotations

import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from mal_desktop.core.merge.plan import AssemblyStep  # noqa: E402
from mal_desktop.gui.models.plan_model import (COL_ALIGN, COL_LAMBDA, COL_METHOD,  # noqa: E402
                                               STEP_ROLE, QtPlanModel)
from mal_desktop.gui.undo import (AddStepCommand, RemoveStepCommand,  # noqa: E402
                                  UpdateStepCommand, new_gesture)
from mal_desktop.gui.views.assembly_panel import SLIDER_STEPS, AssemblyPanel  # noqa: E402
from mal_desktop.gui.workspace import Workspace  # noqa: E402

pytestmark = pytest.mark.gui


def _step(i: int, **kw) -> AssemblyStep:
    return AssemblyStep(source=f"zoo{i}", source_layer=f"layers.{i}", base_layer=f"layers.{i}",
                        **kw)


@pytest.fixture
def workspace(qtbot) -> Workspace:
    ws = Workspace()
    for i in range(3):
        ws.push(AddStepCommand(ws.plan, _step(i)))
    ws.undo_stack.clear()  # start each test from a clean history with three steps
    return ws


@pytest.fixture
def panel(qtbot, workspace: Workspace) -> AssemblyPanel:
    p = AssemblyPanel(workspace)
    qtbot.addWidget(p)
    workspace.select_step(1)
    return p


def test_plan_model_passes_modeltester(qtmodeltester, workspace: Workspace) -> None:
    model = QtPlanModel(workspace)
    qtmodeltester.check(model)
    assert model.rowCount() == 3
    assert model.data(model.index(1, 0), STEP_ROLE) == workspace.plan.steps[1]
    # Edits through the stack keep the model consistent (the tester checks signals as they come).
    workspace.push(AddStepCommand(workspace.plan, _step(7), index=0))
    workspace.undo_stack.undo()
    workspace.push(UpdateStepCommand(workspace.plan, 2, {"lam": 0.25}))
    assert model.data(model.index(2, COL_LAMBDA)) == "0.25"
    qtmodeltester.check(model)


def test_plan_model_follows_moves_and_removals(qtbot, workspace: Workspace) -> None:
    model = QtPlanModel(workspace)
    with qtbot.waitSignal(model.rowsMoved):
        workspace.plan.move_step(0, 2)
    assert [model.step(r).source for r in range(3)] == ["zoo1", "zoo2", "zoo0"]
    assert model.data(model.index(2, 0)) == "zoo0\nlayers.0"  # model over layer
    with qtbot.waitSignal(model.rowsRemoved):
        workspace.plan.remove_step(1)
    assert [model.step(r).source for r in range(2)] == ["zoo1", "zoo0"]


def test_lambda_spin_edit_is_undoable(panel: AssemblyPanel, workspace: Workspace) -> None:
    panel.lam_spin.setValue(0.8)
    assert workspace.plan.steps[1].lam == pytest.approx(0.8)
    assert panel.lam_slider.value() == round(0.8 * SLIDER_STEPS)  # kept in sync
    assert workspace.undo_stack.count() == 1
    workspace.undo_stack.undo()
    assert workspace.plan.steps[1].lam == 0.5
    assert panel.lam_spin.value() == pytest.approx(0.5)  # the editor follows undo
    assert panel.lam_slider.value() == SLIDER_STEPS // 2
    workspace.undo_stack.redo()
    assert workspace.plan.steps[1].lam == pytest.approx(0.8)


def test_slider_drag_is_one_undo_command(panel: AssemblyPanel, workspace: Workspace) -> None:
    slider = panel.lam_slider
    slider.setSliderDown(True)
    panel._begin_drag()  # what sliderPressed does on a real mouse press
    for v in (550, 600, 700, 900):
        slider.setValue(v)
    slider.setSliderDown(False)
    panel._end_drag()
    assert workspace.plan.steps[1].lam == pytest.approx(0.9)
    assert panel.lam_spin.value() == pytest.approx(0.9)
    assert workspace.undo_stack.count() == 1  # merged via id()/mergeWith
    workspace.undo_stack.undo()
    assert workspace.plan.steps[1].lam == 0.5
    # A second drag is its own command.
    panel._begin_drag()
    slider.setSliderDown(True)
    slider.setValue(100)
    slider.setSliderDown(False)
    panel._end_drag()
    assert workspace.undo_stack.count() == 1 and workspace.undo_stack.index() == 1
    assert workspace.plan.steps[1].lam == pytest.approx(0.1)


def test_gesture_merge_back_to_start_leaves_no_entry(workspace: Workspace) -> None:
    g = new_gesture()
    workspace.push(UpdateStepCommand(workspace.plan, 0, {"lam": 0.7}, gesture=g))
    workspace.push(UpdateStepCommand(workspace.plan, 0, {"lam": 0.5}, gesture=g))
    assert workspace.plan.steps[0].lam == 0.5
    assert workspace.undo_stack.count() == 0  # obsolete after the merge


def test_the_method_combo_explains_the_chosen_method(panel: AssemblyPanel,
                                                     workspace: Workspace) -> None:
    workspace.push(UpdateStepCommand(workspace.plan, 1, {"method": "ties"}))
    tip = panel.method_combo.toolTip()
    assert tip.startswith("How the aligned zoo layer is combined") and "\nTIES: trim" in tip
    workspace.push(UpdateStepCommand(workspace.plan, 1, {"method": "linear"}))
    assert "(1 - lambda) base + lambda target" in panel.method_combo.toolTip()


def test_align_and_unmatched_changes_undo(panel: AssemblyPanel, workspace: Workspace) -> None:
    combo = panel.align_combo
    combo.setCurrentIndex(combo.findData("local"))
    combo.activated.emit(combo.currentIndex())  # what a user's pick emits
    assert workspace.plan.steps[1].align == "local"
    u = panel.unmatched_combo
    u.setCurrentIndex(u.findData("keep"))
    u.activated.emit(u.currentIndex())
    assert workspace.plan.steps[1].unmatched == "keep"
    assert workspace.undo_stack.count() == 2
    assert workspace.undo_stack.text(0) == "Set alignment of step 2 to local"  # which step
    workspace.undo_stack.undo()
    workspace.undo_stack.undo()
    assert (workspace.plan.steps[1].align, workspace.plan.steps[1].unmatched) == ("chain", "zero")
    assert panel.align_combo.currentData() == "chain"


def test_method_change_builds_param_form(panel: AssemblyPanel, workspace: Workspace) -> None:
    combo = panel.method_combo
    combo.setCurrentIndex(combo.findData("ties"))
    combo.activated.emit(combo.currentIndex())
    assert workspace.plan.steps[1].method == "ties"
    box = panel._param_boxes["density"]
    assert box.value() == pytest.approx(0.2)  # the schema's default
    assert box.maximum() == 1.0 and "fraction" in box.toolTip()
    box.setValue(0.4)
    assert dict(workspace.plan.steps[1].params) == {"density": pytest.approx(0.4)}
    workspace.undo_stack.undo()
    assert workspace.plan.steps[1].params == ()
    assert panel._param_boxes["density"].value() == pytest.approx(0.2)
    workspace.undo_stack.undo()
    assert workspace.plan.steps[1].method == "linear"
    assert panel._param_boxes == {}  # linear has no parameters: the form is empty


def test_reorder_and_remove_undo(panel: AssemblyPanel, workspace: Workspace) -> None:
    names = lambda: [s.source for s in workspace.plan.steps]  # noqa: E731
    panel.move_up()
    assert names() == ["zoo1", "zoo0", "zoo2"]
    assert workspace.selected_step == 0  # the selection follows the moved step
    panel.move_down()
    panel.move_down()
    assert names() == ["zoo0", "zoo2", "zoo1"]
    assert workspace.selected_step == 2
    assert not panel.down_action.isEnabled()
    panel.remove_selected()
    assert names() == ["zoo0", "zoo2"]
    assert panel.model.rowCount() == 2
    workspace.undo_stack.undo()  # the removed step comes back in place
    assert names() == ["zoo0", "zoo2", "zoo1"]
    for _ in range(3):
        workspace.undo_stack.undo()
    assert names() == ["zoo0", "zoo1", "zoo2"]
    workspace.undo_stack.redo()
    assert names() == ["zoo1", "zoo0", "zoo2"]


def test_view_selection_and_lambda_signal(qtbot, panel: AssemblyPanel,
                                          workspace: Workspace) -> None:
    with qtbot.waitSignal(panel.selectedLambdaChanged) as blocker:
        workspace.push(UpdateStepCommand(workspace.plan, 1, {"lam": 0.3}))
    assert blocker.args == [pytest.approx(0.3)]
    panel.view.setCurrentIndex(panel.model.index(2, 0))
    assert workspace.selected_step == 2
    with qtbot.waitSignal(panel.selectedLambdaChanged) as blocker:
        workspace.select_step(-1)
    assert math.isnan(blocker.args[0])
    assert not panel.editor.isEnabled()
    # an undone or redone edit selects the step it changed: the editor shows the change
    workspace.undo_stack.undo()
    assert workspace.selected_step == 1 and panel.editor.isEnabled()
    assert panel.lam_spin.value() == pytest.approx(workspace.plan.steps[1].lam)
    workspace.select_step(-1)
    workspace.undo_stack.redo()
    assert workspace.selected_step == 1 and panel.lam_spin.value() == pytest.approx(0.3)


def test_apply_lambda_from_plot(panel: AssemblyPanel, workspace: Workspace) -> None:
    panel.apply_lambda(0.35)
    assert workspace.plan.steps[1].lam == pytest.approx(0.35)
    panel.apply_lambda(1.7)  # clamped
    assert workspace.plan.steps[1].lam == 1.0
    assert workspace.undo_stack.count() == 2
    panel.apply_lambda(float("nan"))  # ignored
    assert workspace.undo_stack.count() == 2


def test_remove_zoo_removes_its_steps_undoably(qtbot) -> None:
    from layer_fixtures import entry

    # Reached through the workspace API only: real loaded models and steps a drop would make.
    ws = Workspace()
    ws.set_base(entry("base_mlp"))
    for name in ("zoo_mlp", "zoo_cnn"):
        ws.add_zoo(entry(name))
    steps = [AssemblyStep("zoo_mlp", "layers.0", "layers.0"),
             AssemblyStep("zoo_cnn", "head", "head"),
             AssemblyStep("zoo_mlp", "layers.1", "layers.1")]
    for step in steps:
        assert ws.check_plan_step(step).ok, step
        ws.push(AddStepCommand(ws.plan, step))
    ws.undo_stack.clear()

    ws.remove_zoo("zoo_mlp")
    assert ws.plan.steps == [steps[1]]
    assert set(ws.zoo) == set(ws.plan.zoo) == {"zoo_cnn"}  # the plan forgets the model too
    assert ws.undo_stack.count() == 1  # the model and its steps: one command
    ws.undo_stack.undo()
    assert ws.plan.steps == steps  # back in place
    assert set(ws.zoo) == set(ws.plan.zoo) == {"zoo_mlp", "zoo_cnn"}  # the model comes back
    ws.undo_stack.redo()
    assert ws.plan.steps == [steps[1]]
    with pytest.raises(KeyError):
        ws.remove_zoo("zoo_mlp")


def test_empty_plan_shows_hint(qtbot) -> None:
    ws = Workspace()
    p = AssemblyPanel(ws)
    qtbot.addWidget(p)
    p.resize(500, 400)
    p.show()
    qtbot.waitExposed(p)
    assert p.model.rowCount() == 0
    assert not p.editor.isEnabled()
    assert not p.remove_action.isEnabled()
    assert p.view.model().headerData(0, Qt.Orientation.Horizontal) == "Step\n(zoo layer)"


def _shown_panel(qtbot, ws: Workspace) -> AssemblyPanel:
    """The plan panel of ``ws``, on screen (its columns are fitted to a real width)."""
    p = AssemblyPanel(ws)
    qtbot.addWidget(p)
    p.show()
    qtbot.waitExposed(p)
    return p


def test_a_narrow_plan_elides_names_but_hides_no_column(qtbot, workspace: Workspace) -> None:
    """Made narrower than its columns need, the table elides the step, base-layer and case
    text (whole in each row's tooltip) and keeps lambda, alignment and method whole; no column
    is hidden and no horizontal scroll bar appears while the elided widths fit."""
    workspace.push(UpdateStepCommand(workspace.plan, 0, {"source": "a-rather-long-zoo-model"}))
    p = _shown_panel(qtbot, workspace)
    view, header = p.view, p.view.header()
    need = view.column_needs()
    p.resize(view.needed_width() + 40, 400)
    qtbot.waitUntil(lambda: header.sectionSize(0) >= need[0])
    assert all(header.sectionSize(c) >= need[c] for c in need)
    p.resize(view.needed_width() - 60, 400)
    qtbot.waitUntil(lambda: header.sectionSize(0) < need[0])
    for c in need:
        assert not view.isColumnHidden(c)
    for c in (COL_LAMBDA, COL_ALIGN, COL_METHOD):  # short columns stay whole
        assert header.sectionSize(c) >= need[c]
    assert sum(header.sectionSize(c) for c in need) <= view.viewport().width()
    assert not view.horizontalScrollBar().isVisible()
    assert "a-rather-long-zoo-model" in view.model().index(0, 0).data(
        Qt.ItemDataRole.ToolTipRole)


def test_a_narrow_plan_keeps_the_width_case_whole(qtbot) -> None:
    """At the plan's default width (a quarter of 1600 px) a query projection's case read
    "out 12\u20264 pad": the three long columns were cut evenly. The case's numbers now stay
    whole while the model name and the base layer's path, which elide keeping what tells them
    apart, give way."""
    from dataclasses import replace

    from layer_fixtures import entry

    from mal_desktop.gui.models.plan_model import COL_BASE, COL_CASE, COL_SOURCE
    from mal_desktop.gui.views.step_list import ELIDED_MIN

    ws = Workspace()
    ws.set_base(entry("base_mlp"))
    ws.add_zoo(replace(entry("zoo_mlp"), name="a-rather-long-zoo-model-name-w128-s1"))
    ws.push(AddStepCommand(ws.plan, AssemblyStep("a-rather-long-zoo-model-name-w128-s1",
                                                 "layers.0", "layers.0")))
    p = _shown_panel(qtbot, ws)
    view, header = p.view, p.view.header()
    need = view.column_needs()
    assert "\u2190" in view.model().index(0, COL_CASE).data()  # a width case with numbers
    # room for the case and a little more than the least for the other two: shared evenly,
    # each would get less than the case needs
    p.resize(view.needed_width() - need[COL_SOURCE] - need[COL_BASE] + 2 * ELIDED_MIN + 20, 400)
    assert (need[COL_CASE] + 2 * ELIDED_MIN + 20) // 3 < need[COL_CASE]
    qtbot.waitUntil(lambda: header.sectionSize(COL_SOURCE) < need[COL_SOURCE])
    case = view.model().index(0, COL_CASE)
    assert header.sectionSize(COL_CASE) >= view.sizeHintForIndex(case).width()  # drawn whole
    assert "\u2026" in _shown_text(view, 0, COL_SOURCE)


def _shown_text(view, row: int, col: int) -> str:
    """The text the column's delegate draws for a cell (elided as drawn, lines as "\n")."""
    from PySide6.QtWidgets import QStyleOptionViewItem

    index = view.model().index(row, col)
    option = QStyleOptionViewItem()
    option.initFrom(view)
    option.widget = view
    option.rect = view.visualRect(index)
    (view.itemDelegateForColumn(col) or view.itemDelegate()).initStyleOption(option, index)
    return option.text.replace("\u2028", "\n")


def test_a_narrow_plan_tells_long_layer_paths_apart(qtbot) -> None:
    """Language-model steps in a dock a third of a window wide: the rows showed "…ode / …proj"
    and "model.lay…p.up_proj" alike. Layer paths are elided at their start, keeping the block
    and projection; the model name in its middle, keeping its seed and variant."""
    ws = Workspace()
    for layer in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj"):
        ws.push(AddStepCommand(ws.plan, AssemblyStep("llama-w128-s1-code", layer, layer)))
    p = _shown_panel(qtbot, ws)
    view = p.view
    p.resize(390, 400)
    qtbot.waitUntil(lambda: view.header().sectionSize(1) < view.column_needs()[1])
    for row, tail in ((0, "k_proj"), (1, "up_proj")):
        model_line, layer_line = _shown_text(view, row, 0).split("\n")
        assert model_line.startswith(f"{row + 1}.") and model_line.endswith("e")  # "…code"
        assert layer_line.rstrip().endswith(tail) and "\u2026" in layer_line, layer_line
        base = _shown_text(view, row, 1)
        assert base.startswith("\u2026") and base.endswith(tail), base
    p.resize(480, 400)  # a little more room: the block index shows before the path's middle
    qtbot.wait(30)
    for row, tail in ((0, "k_proj"), (1, "up_proj")):
        base = _shown_text(view, row, 1)
        assert base.startswith(f"\u2026{row}.") and base.endswith(tail), base
    # the step editor fits too: the long route wraps instead of widening the editor
    ws.select_step(1)
    qtbot.wait(50)
    viewport = p.editor_area.viewport()
    assert p.editor.minimumSizeHint().width() <= viewport.width()
    for field in (p.lam_spin, p.align_combo, p.method_combo):
        right = field.mapTo(viewport, field.rect().topRight()).x()
        assert field.isVisible() and right <= viewport.width(), field
    assert p.editor.title() == "Step 2" and "up_proj" in p.route_label.toolTip()
    # every elided line fits the text room the style leaves, beside the warning icon too (the
    # steps' models are not open here, so each row carries one): the style elided again
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem
    for width in (330, 360, 390, 460):
        p.resize(width, 400)
        qtbot.wait(30)
        for col in (0, 1):
            index = view.model().index(1, col)
            option = QStyleOptionViewItem()
            view.initViewItemOption(option)
            option.rect = view.visualRect(index)
            view.itemDelegateForColumn(col).initStyleOption(option, index)
            style = view.style()
            text = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, option, view)
            room = text.width() - 2 * (style.pixelMetric(
                QStyle.PixelMetric.PM_FocusFrameHMargin, option, view) + 1)
            for line in option.text.split("\u2028"):
                assert option.fontMetrics.horizontalAdvance(line) <= room, (width, col, line)
    p.resize(390, 400)
    qtbot.wait(30)
    # the elided columns share the room evenly: neither layer column is squeezed alone
    assert abs(view.header().sectionSize(0) - view.header().sectionSize(1)) <= 8


def _wheel(widget, steps: int = -1) -> None:
    """One notch of a real mouse wheel over ``widget`` (negative: towards the user)."""
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(),
                        QPoint(0, 120 * steps), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_scrolls_the_step_editor_and_edits_only_a_chosen_field(
        qtbot, panel: AssemblyPanel, workspace: Workspace) -> None:
    """A user scrolling down the editor to reach the merge method turned it from TIES to DARE:
    the wheel changed whichever box passed under the pointer."""
    combo = panel.method_combo
    combo.setCurrentIndex(combo.findData("ties"))
    combo.activated.emit(combo.currentIndex())
    panel.resize(360, 260)  # short: the editor scrolls
    panel.show()
    qtbot.waitExposed(panel)
    bar = panel.editor_area.verticalScrollBar()
    assert bar.maximum() > 0
    panel.editor_area.ensureWidgetVisible(combo)
    before = bar.value()
    commands, chosen = workspace.undo_stack.count(), workspace.plan.steps[1]
    for field in (combo, panel.align_combo, panel.lam_spin, panel.lam_slider,
                  panel._param_boxes["density"]):
        assert not field.hasFocus()
        _wheel(field, +1)  # away from the user: the form scrolls up
    assert workspace.plan.steps[1] == chosen and chosen.method == "ties"
    assert workspace.undo_stack.count() == commands
    assert bar.value() != before  # the wheel went to the form instead
    # once the user has chosen the box (a click, Tab), the wheel edits it as usual
    combo.setFocus()
    qtbot.waitUntil(combo.hasFocus)
    _wheel(combo, -1)
    assert workspace.plan.steps[1].method == "dare"
    assert combo.currentText() == "DARE"  # the names people write, not the plan's keys


def test_a_step_repeating_an_earlier_one_is_marked_until_one_goes(qtbot,
                                                                  workspace: Workspace) -> None:
    """A plan file or project can merge one layer twice (the app no longer adds such a step):
    the plan says so on the later step, and stops saying it when one of them is removed."""
    from mal_desktop.gui.undo import RemoveStepCommand

    model = QtPlanModel(workspace)
    workspace.push(AddStepCommand(workspace.plan, _step(0)))  # step 4 = step 1 again
    tip = model.data(model.index(3, COL_LAMBDA), Qt.ItemDataRole.ToolTipRole)
    assert "Step 1 merges the same zoo layer into the same base layer" in tip
    assert "merges the same zoo layer" not in model.data(model.index(0, COL_LAMBDA),
                                                         Qt.ItemDataRole.ToolTipRole)
    with qtbot.waitSignal(model.dataChanged):
        workspace.push(RemoveStepCommand(workspace.plan, 0))
    assert all("merges the same zoo layer" not in model.data(model.index(row, COL_LAMBDA),
                                                             Qt.ItemDataRole.ToolTipRole)
               for row in range(3))
    model.detach()


def test_a_layer_path_keeps_its_block_index_and_name_as_it_shrinks(qapp) -> None:
    from PySide6.QtGui import QFont, QFontMetrics

    from mal_desktop.gui.views.step_list import elide_path

    metrics = QFontMetrics(QFont())
    path = "model.layers.12.self_attn.q_proj"
    width = metrics.horizontalAdvance
    assert elide_path(metrics, path, width(path)) == path
    shown = [elide_path(metrics, path, w) for w in range(width(path) - 1, 10, -3)]
    assert "\u2026layers.12.self_attn.q_proj" in shown and "\u202612.self_attn.q_proj" in shown
    assert "\u202612.s.q_proj" in shown  # the names between shrink before the index goes
    for w, text in zip(range(width(path) - 1, 10, -3), shown):
        assert width(text) <= w, (w, text)
    assert elide_path(metrics, "fc1", 2).endswith("1") or elide_path(metrics, "fc1", 2) == ""


def test_the_highlighted_row_is_the_selected_step_through_every_edit(panel: AssemblyPanel,
                                                                      workspace: Workspace
                                                                      ) -> None:
    """The table's highlighted row and the step the editor, the curve and Remove act on parted
    after a move, a removal or an added step (the selection moved on the old rows, then the
    row move carried it to another step): Remove deleted a step the user had not picked."""
    ws, view = workspace, panel.view

    def agree() -> AssemblyStep | None:
        rows = {i.row() for i in view.selectionModel().selectedRows()}
        current = view.currentIndex().row() if view.currentIndex().isValid() else -1
        assert rows == ({ws.selected_step} if ws.selected_step >= 0 else set())
        assert current == ws.selected_step
        return ws.plan.steps[ws.selected_step] if ws.selected_step >= 0 else None

    ws.select_step(2)
    picked = agree()
    panel.up_action.trigger()  # the step moves up; the highlight goes with it
    assert agree() == picked and ws.selected_step == 1
    panel.down_action.trigger()
    assert agree() == picked and ws.selected_step == 2
    ws.select_step(1)
    picked = agree()
    ws.push(RemoveStepCommand(ws.plan, 0))  # a step above the selection goes (undo, say)
    assert agree() == picked and ws.selected_step == 0
    ws.push(AddStepCommand(ws.plan, _step(5)))  # a new step (a drop, Ctrl+Return) is selected
    assert agree() == ws.plan.steps[-1] == _step(5)
    for _ in range(4):
        ws.undo_stack.undo()
        agree()
    for _ in range(4):
        ws.undo_stack.redo()
        agree()
    ws.select_step(1)
    picked = agree()
    panel.remove_action.trigger()  # Remove removes the highlighted step, nothing else
    assert picked not in ws.plan.steps and len(ws.plan.steps) == 2
    agree()
