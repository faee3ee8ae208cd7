"""The workspace: one entry point for adding steps, one cache of fit checks, and removing a zoo
model undoably together with its steps."""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from layer_fixtures import entry  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from mal_desktop.core.merge.plan import AssemblyStep  # noqa: E402
from mal_desktop.gui import workspace as workspace_mod  # noqa: E402
from mal_desktop.gui.models.layer_tree_model import QtLayerTreeModel  # noqa: E402
from mal_desktop.gui.views.layer_tree_view import ZooTabs  # noqa: E402
from mal_desktop.gui.workspace import Workspace  # noqa: E402

pytestmark = pytest.mark.gui

COPY = Qt.DropAction.CopyAction


def test_add_step_adds_what_fits_undoably_and_refuses_the_rest(ws: Workspace) -> None:
    step = AssemblyStep("zoo_mlp", "layers.0", "layers.0")
    added = ws.add_step(step)
    assert added.ok and added.index == 0 and ws.plan.steps == [step]
    assert added.message == ("Added step 1: zoo_mlp:layers.0 \u2192 layers.0: out: base wider "
                             "128 <- 64 (zero-pad 64); in: equal 64 (fixed)")
    first = ws.add_step(AssemblyStep("zoo_mlp", "layers.1", "layers.1"), index=0)
    assert first.index == 0 and ws.plan.steps[1] == step and ws.selected_step == 0
    ws.undo_stack.undo()
    assert ws.plan.steps == [step]
    ws.undo_stack.redo()
    assert len(ws.plan.steps) == 2
    refused = ws.add_step(AssemblyStep("zoo_cnn", "features.0.0", "layers.0"))
    assert not refused.ok and refused.index == -1
    assert refused.message.startswith("Cannot merge zoo_cnn:features.0.0 \u2192 layers.0: ")
    assert "conv2d" in refused.message
    assert len(ws.plan.steps) == 2 and ws.undo_stack.count() == 2  # nothing pushed
    unknown = ws.add_step(AssemblyStep("gone", "layers.0", "layers.0"))
    assert not unknown.ok and "not loaded" in unknown.message


def test_drops_and_the_menu_share_the_workspace_cache(ws: Workspace, monkeypatch) -> None:
    asked: list[tuple[str, str]] = []
    real = workspace_mod.check_step

    def counting(base_tree, donor_tree, source_layer, base_layer):
        asked.append((source_layer, base_layer))
        return real(base_tree, donor_tree, source_layer, base_layer)

    monkeypatch.setattr(workspace_mod, "check_step", counting)
    base = QtLayerTreeModel(ws.base.tree, "base", ws.base.name, ws)
    donor = QtLayerTreeModel(ws.zoo["zoo_mlp"].tree, "zoo", "zoo_mlp", ws)
    mime = donor.mimeData([donor.index_of("layers.0")])
    target = base.index_of("layers.0")
    for _hover in range(5):
        assert base.canDropMimeData(mime, COPY, -1, 0, target)
    assert ws.check("zoo_mlp", "layers.0", "layers.0").ok  # the menu's question: same answer
    assert asked == [("layers.0", "layers.0")]  # computed once for all of them
    assert base.dropMimeData(mime, COPY, -1, 0, target)
    assert asked == [("layers.0", "layers.0")]
    ws.undo_stack.undo()  # (a layer is planned once: the same drop again is refused)
    ws.add_zoo(entry("zoo_mlp"))  # the models changed: answers may differ, asked again
    assert base.canDropMimeData(mime, COPY, -1, 0, target)
    assert asked == [("layers.0", "layers.0")] * 2


def test_removing_a_zoo_model_is_undone_with_its_steps(qtbot, ws: Workspace) -> None:
    tabs = ZooTabs(ws)
    qtbot.addWidget(tabs)
    for source, layer in (("zoo_mlp", "layers.0"), ("zoo_mlp5", "layers.1"),
                          ("zoo_mlp", "layers.1"), ("zoo_mlp5", "layers.0")):
        assert ws.add_step(AssemblyStep(source, layer, layer)).ok
    before = list(ws.plan.steps)
    ws.undo_stack.clear()
    with qtbot.waitSignal(ws.modelsChanged):
        ws.remove_zoo("zoo_mlp5")
    assert list(ws.zoo) == ["zoo_mlp", "zoo_cnn"] and "zoo_mlp5" not in ws.plan.zoo
    assert ws.plan.steps == [before[0], before[2]]
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["zoo_mlp", "zoo_cnn"]
    assert ws.undo_stack.count() == 1
    assert ws.undo_stack.text(0) == "Remove zoo model zoo_mlp5 and its 2 steps"

    with qtbot.waitSignal(ws.modelsChanged):
        ws.undo_stack.undo()
    assert list(ws.zoo) == ["zoo_mlp", "zoo_mlp5", "zoo_cnn"]  # back in its place
    assert ws.plan.steps == before and "zoo_mlp5" in ws.plan.zoo
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["zoo_mlp", "zoo_mlp5", "zoo_cnn"]
    assert all(ws.check_plan_step(s).ok for s in ws.plan.steps)

    ws.undo_stack.redo()
    assert list(ws.zoo) == ["zoo_mlp", "zoo_cnn"] and ws.plan.steps == [before[0], before[2]]
    ws.undo_stack.undo()
    assert ws.plan.steps == before and ws.zoo["zoo_mlp5"].tree is not None


def test_undo_brings_a_model_back_under_a_free_name(qtbot, ws: Workspace) -> None:
    ws.add_zoo(replace(entry("zoo_mlp5"), name="a", path="/models/a.safetensors"))
    assert ws.add_step(AssemblyStep("a", "layers.1", "layers.1")).ok
    ws.remove_zoo("a")
    # Another file opened under the same name while "a" was gone:
    ws.add_zoo(replace(entry("zoo_mlp"), name="a", path="/other/a.safetensors"))
    ws.undo_stack.undo()  # the removal (loading a model is not on the undo stack)
    assert ws.zoo["a"].path_text == "/other/a.safetensors"
    assert ws.zoo["a-2"].path_text == "/models/a.safetensors"
    assert [s.source for s in ws.plan.steps] == ["a-2"]  # the step follows its model
    ws.undo_stack.redo()
    assert set(ws.zoo) == {"zoo_mlp", "zoo_mlp5", "zoo_cnn", "a"} and ws.plan.steps == []
