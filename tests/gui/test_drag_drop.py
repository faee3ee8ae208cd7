"""Drag a zoo layer onto a base layer: through mimeData/canDropMimeData/dropMimeData (offscreen
a simulated mouse drag does nothing) and through synthetic drag events on the view."""

from __future__ import annotations

import json
import os
import warnings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from layer_fixtures import entry  # noqa: E402
from PySide6.QtCore import QMimeData, QModelIndex, Qt  # noqa: E402
from PySide6.QtGui import QDragMoveEvent, QDropEvent  # noqa: E402

from mal_desktop.core.merge.plan import AssemblyStep  # noqa: E402
from mal_desktop.gui.models.layer_tree_model import QtLayerTreeModel  # noqa: E402
from mal_desktop.gui.models.mime import LAYER_MIME, LayerRef, decode_layer  # noqa: E402
from mal_desktop.gui.views.layer_tree_view import LayerTreePane, ZooTabs  # noqa: E402
from mal_desktop.gui.workspace import Workspace  # noqa: E402

pytestmark = pytest.mark.gui

COPY = Qt.DropAction.CopyAction


def _models(ws: Workspace, zoo: str) -> tuple[QtLayerTreeModel, QtLayerTreeModel]:
    base = QtLayerTreeModel(ws.base.tree, "base", ws.base.name, ws)
    donor = QtLayerTreeModel(ws.zoo[zoo].tree, "zoo", zoo, ws)
    return base, donor


def _drag(donor: QtLayerTreeModel, path: str) -> QMimeData:
    mime = donor.mimeData([donor.index_of(path, 1)])  # any column of the row drags the layer
    assert mime is not None and mime.hasFormat(LAYER_MIME)
    return mime


def test_mime_payload_is_json_not_pickle(ws: Workspace) -> None:
    _base, donor = _models(ws, "zoo_mlp")
    mime = _drag(donor, "layers.1")
    payload = json.loads(bytes(mime.data(LAYER_MIME).data()).decode("utf-8"))
    assert payload == {"model": "zoo_mlp", "role": "zoo", "layer": "layers.1",
                       "kind": "linear", "shape": [96, 64]}
    assert decode_layer(mime) == LayerRef("zoo_mlp", "zoo", "layers.1", "linear", (96, 64))
    junk = QMimeData()
    junk.setData(LAYER_MIME, b"\x80\x04not json")
    assert decode_layer(junk) is None
    # A module holding layers drags as a block; tensor rows do not drag.
    block = donor.mimeData([donor.index_of("layers")])
    assert decode_layer(block) == LayerRef("zoo_mlp", "zoo", "layers", "block", ())
    assert donor.flags(donor.index_of("head")) & Qt.ItemFlag.ItemIsDragEnabled
    weight = donor.index(0, 0, donor.index_of("head"))  # head.weight, a tensor row
    assert not donor.flags(weight) & Qt.ItemFlag.ItemIsDragEnabled
    assert donor.mimeData([weight]) is None


def test_drop_adds_step_with_width_case_then_undo_redo(qtbot, ws: Workspace) -> None:
    base, donor = _models(ws, "zoo_mlp")
    mime = _drag(donor, "layers.0")  # zoo 64 x 64 into base 128 x 64
    target = base.index_of("layers.0")
    with qtbot.waitSignal(base.dropHint) as hint:
        assert base.canDropMimeData(mime, COPY, -1, 0, target)
    text, ok = hint.args
    assert ok and "out: base wider 128 <- 64 (zero-pad 64); in: equal 64" in text
    assert base.dropMimeData(mime, COPY, -1, 0, target)
    assert len(ws.plan.steps) == 1
    step = ws.plan.steps[0]
    assert (step.source, step.source_layer, step.base_layer) == ("zoo_mlp", "layers.0",
                                                                 "layers.0")
    assert (step.lam, step.align, step.unmatched, step.method) == (0.5, "chain", "zero", "linear")
    assert ws.selected_step == 0
    ws.undo_stack.undo()
    assert ws.plan.steps == []
    ws.undo_stack.redo()
    assert ws.plan.steps == [step]


def test_narrower_base_side_is_described(ws: Workspace) -> None:
    base, donor = _models(ws, "zoo_mlp")
    ok, text, _ = base.evaluate_drop(_drag(donor, "layers.1"), -1, base.index_of("layers.1"))
    # zoo layers.1 is 96 x 64, base layers.1 is 64 x 128
    assert ok and text.endswith("out: base narrower 64 <- 96 (drop 32); "
                                "in: base wider 128 <- 64 (zero-pad 64)")


def test_steps_from_several_zoo_models_into_one_base(ws: Workspace) -> None:
    base, mlp = _models(ws, "zoo_mlp")
    _, mlp5 = _models(ws, "zoo_mlp5")
    assert base.dropMimeData(_drag(mlp, "layers.1"), COPY, -1, 0, base.index_of("layers.1"))
    assert base.dropMimeData(_drag(mlp5, "layers.0"), COPY, -1, 0, base.index_of("layers.0"))
    assert [(s.source, s.source_layer, s.base_layer) for s in ws.plan.steps] == [
        ("zoo_mlp", "layers.1", "layers.1"), ("zoo_mlp5", "layers.0", "layers.0")]


def test_drop_onto_a_layer_of_another_name_records_both(qapp) -> None:
    # A step may take layer l' of the donor into a different layer l of the base; every other
    # drop here uses one name for both, which cannot tell the two fields apart.
    ws = Workspace()
    ws.set_base(entry("resnet"))
    ws.add_zoo(entry("resnet"))
    base, donor = _models(ws, "resnet")
    ok, text, _ = base.evaluate_drop(_drag(donor, "blocks.0.conv1"), -1,
                                     base.index_of("blocks.1.conv1"))
    assert ok, text
    assert base.dropMimeData(_drag(donor, "blocks.0.conv1"), COPY, -1, 0,
                             base.index_of("blocks.1.conv1"))
    assert [(s.source, s.source_layer, s.base_layer) for s in ws.plan.steps] == [
        ("resnet", "blocks.0.conv1", "blocks.1.conv1")]


@pytest.mark.parametrize("zoo, layer, target, reason", [
    ("zoo_cnn", "features.0.0", "layers.0", "cannot merge a conv2d layer into a linear layer"),
    ("zoo_mlp5", "head", "head", "writes the class outputs (10); head has 5 outputs"),
])
def test_impossible_drop_is_refused_with_reason(qtbot, ws: Workspace, zoo: str, layer: str,
                                                target: str, reason: str) -> None:
    base, donor = _models(ws, zoo)
    mime = _drag(donor, layer)
    with qtbot.waitSignal(base.dropHint) as hint:
        assert not base.canDropMimeData(mime, COPY, -1, 0, base.index_of(target))
    assert hint.args[1] is False and reason in hint.args[0]
    assert not base.dropMimeData(mime, COPY, -1, 0, base.index_of(target))
    assert ws.plan.steps == [] and ws.undo_stack.count() == 0


def test_kernel_mismatch_is_refused(qapp) -> None:
    ws = Workspace()
    ws.set_base(entry("base_cnn"))
    ws.add_zoo(entry("zoo_cnn5"))
    base, donor = _models(ws, "zoo_cnn5")
    ok, text, _ = base.evaluate_drop(_drag(donor, "features.2.0"), -1,
                                     base.index_of("features.2.0"))
    assert not ok and "kernel 5x5" in text and "kernel 3x3" in text


def test_drops_on_non_layers_and_from_base_are_refused(ws: Workspace) -> None:
    base, donor = _models(ws, "zoo_mlp")
    mime = _drag(donor, "layers.0")
    ok, text, _ = base.evaluate_drop(mime, -1, base.index_of("layers"))
    assert not ok and "not a weight layer" in text
    ok, _, _ = base.evaluate_drop(mime, -1, QModelIndex())
    assert not ok
    own = base.mimeData([base.index_of("layers.0")])  # the base pane never drags, but still
    assert own is not None
    ok, text, _ = base.evaluate_drop(own, -1, base.index_of("layers.1"))
    assert not ok and "zoo model" in text
    ok, _, _ = donor.evaluate_drop(mime, -1, donor.index_of("layers.1"))
    assert not ok  # zoo panes accept no drops
    assert not donor.flags(donor.index_of("layers.1")) & Qt.ItemFlag.ItemIsDropEnabled


def test_view_drag_events_tint_row_and_drop(qtbot, ws: Workspace) -> None:
    """Synthetic drag-move and drop events on the base view (through the search proxy)."""
    pane = LayerTreePane(ws, "base")
    qtbot.addWidget(pane)
    pane.resize(900, 500)
    pane.show()
    qtbot.waitExposed(pane)
    hints: list[tuple[str, bool]] = []
    pane.dropHint.connect(lambda text, ok: hints.append((text, ok)))
    mlp = QtLayerTreeModel(ws.zoo["zoo_mlp"].tree, "zoo", "zoo_mlp", ws)
    cnn = QtLayerTreeModel(ws.zoo["zoo_cnn"].tree, "zoo", "zoo_cnn", ws)
    view = pane.view
    for donor, path, expect_ok in ((mlp, "layers.0", True), (cnn, "features.0.0", False)):
        mime = _drag(donor, path)
        pos = view.visualRect(pane.proxy_index("layers.0")).center()
        with warnings.catch_warnings():
            # PySide6 6.12 flags the only QDragMoveEvent constructor as deprecated.
            warnings.simplefilter("ignore", DeprecationWarning)
            move = QDragMoveEvent(pos, COPY, mime, Qt.MouseButton.LeftButton,
                                  Qt.KeyboardModifier.NoModifier)
        view.dragMoveEvent(move)
        tinted = view.drop_target()
        assert tinted is not None and tinted[1] is expect_ok, hints
        assert tinted[0].data(Qt.ItemDataRole.UserRole + 10) == "layers.0"
        assert move.isAccepted() is expect_ok
        assert hints[-1][1] is expect_ok
    assert "zero-pad 64" in hints[-2][0] and "conv2d" in hints[-1][0]
    mime = _drag(mlp, "layers.1")
    pos = view.visualRect(pane.proxy_index("layers.1")).center()
    drop = QDropEvent(pos, COPY, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    view.dropEvent(drop)
    assert drop.isAccepted()
    assert [(s.source_layer, s.base_layer) for s in ws.plan.steps] == [("layers.1", "layers.1")]
    assert view.drop_target() is None  # the tint goes away after the drop
    assert hints[-1][1] and hints[-1][0].startswith("Added step 1")


def test_panes_follow_the_workspace(qtbot, ws: Workspace) -> None:
    base = LayerTreePane(ws, "base")
    zoo = LayerTreePane(ws, "zoo", "zoo_mlp5")
    qtbot.addWidget(base)
    qtbot.addWidget(zoo)
    assert base.entry is ws.base and base.model is not None
    assert zoo.entry is ws.zoo["zoo_mlp5"] and zoo.proxy.rowCount() == 2  # layers, head
    ws.remove_zoo("zoo_mlp5")
    assert zoo.model is None and zoo.proxy.rowCount() == 0
    ws.add_zoo(entry("zoo_mlp5"))  # loaded again: the pane shows it again
    assert zoo.model is not None
    ws.set_base(entry("base_cnn"))
    assert base.entry.name == "base_cnn" and base.proxy_index("fc").isValid()
    ws.set_base(None)
    assert base.model is None and base.proxy.rowCount() == 0


def test_zoo_tabs_sync_with_the_workspace(qtbot, ws: Workspace) -> None:
    tabs = ZooTabs(ws)
    qtbot.addWidget(tabs)
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["zoo_mlp", "zoo_mlp5", "zoo_cnn"]
    ws.remove_zoo("zoo_mlp5")
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["zoo_mlp", "zoo_cnn"]
    ws.clear()
    assert tabs.count() == 1 and tabs.tabText(0) == "Zoo"  # the empty-state tab


def test_merge_menu_alternative_to_dragging(qtbot, ws: Workspace) -> None:
    pane = LayerTreePane(ws, "zoo", "zoo_mlp5")
    qtbot.addWidget(pane)
    targets = {t[0]: t[1:] for t in pane.merge_targets("head")}
    assert set(targets) == {"layers.0", "layers.1", "head"}
    assert targets["head"][0] is False and "class outputs" in targets["head"][1]
    # class scores are not hidden units: the head cannot merge into a hidden layer either
    assert targets["layers.1"][0] is False
    assert "writes its model's class outputs" in targets["layers.1"][1]
    hidden = {t[0]: t[1:] for t in pane.merge_targets("layers.1")}
    assert hidden["layers.1"][0] is True and "zero-pad" in hidden["layers.1"][1]
    with qtbot.waitSignal(pane.dropHint) as hint:
        assert not pane.add_step_into("head", "head")
    assert hint.args[1] is False and ws.plan.steps == []
    assert pane.add_step_into("layers.1", "layers.1")
    assert [(s.source, s.source_layer, s.base_layer) for s in ws.plan.steps] == [
        ("zoo_mlp5", "layers.1", "layers.1")]
    ws.undo_stack.undo()
    assert ws.plan.steps == []


def test_drop_of_a_stacked_recurrent_layer_adds_a_step(qtbot) -> None:
    """rnn.l1 of a 2-layer bidirectional LSTM drags from the zoo and drops onto the base's
    rnn.l1 (a stacked layer is a layer node of its own), then undo removes the step."""
    import sys
    from pathlib import Path

    import torch

    from mal_desktop.core.graph.tree import build_layer_tree
    from mal_desktop.core.io.model import LoadedModel
    from mal_desktop.gui.workspace import ModelEntry

    sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
    import idiom_modules as im

    def lstm_entry(name: str, seed: int) -> ModelEntry:
        torch.manual_seed(seed)
        model = LoadedModel(im.LSTMNet("lstm", 2, True).eval(), {"kind": "memory"}, (4, 5), 3,
                            metadata={"name": name})
        return ModelEntry(name, None, model, build_layer_tree(model))

    ws = Workspace()
    ws.set_base(lstm_entry("base_lstm", 0))
    ws.add_zoo(lstm_entry("zoo_lstm", 1))
    base, donor = _models(ws, "zoo_lstm")
    for model in (base, donor):
        layer = model.index_of("rnn.l1")
        assert layer.isValid() and layer.parent() == model.index_of("rnn")
        assert layer.data(Qt.ItemDataRole.DisplayRole).startswith("l1")
    assert donor.flags(donor.index_of("rnn.l1")) & Qt.ItemFlag.ItemIsDragEnabled
    # the stacked module drags as a block of its two layers
    assert decode_layer(donor.mimeData([donor.index_of("rnn")])).kind == "block"
    mime = _drag(donor, "rnn.l1")
    assert decode_layer(mime).layer == "rnn.l1"
    target = base.index_of("rnn.l1")
    assert base.canDropMimeData(mime, COPY, -1, 0, target)
    assert base.dropMimeData(mime, COPY, -1, 0, target)
    step, = ws.plan.steps
    assert (step.source, step.source_layer, step.base_layer) == ("zoo_lstm", "rnn.l1", "rnn.l1")
    ws.undo_stack.undo()
    assert ws.plan.steps == []


def _llama_pair(tmp_path):
    """A workspace with two random tiny Llama folders, base "a" and zoo "b", and the two tree
    models (base, donor)."""
    pytest.importorskip("transformers")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
    from test_hf_folders import write_llama

    from mal_desktop.core.io.files import load_model
    from mal_desktop.gui.workspace import ModelEntry

    ws = Workspace()
    ws.set_base(ModelEntry.from_model(load_model(write_llama(tmp_path / "a", seed=0)[0]), "a"))
    ws.add_zoo(ModelEntry.from_model(load_model(write_llama(tmp_path / "b", seed=1)[0]), "b"))
    return (ws, *_models(ws, "b"))


def test_a_block_drops_as_one_step_per_layer_and_undoes_as_one(qtbot, tmp_path) -> None:
    """A transformer layer of a zoo Llama onto one of the base: its seven layers become seven
    steps, in execution order, added and undone as one edit. Blocks holding other layers, and
    a block dropped on a layer, are refused with the reason."""
    ws, base, donor = _llama_pair(tmp_path)
    tip = base.data(base.index_of("model.layers.1"), Qt.ItemDataRole.ToolTipRole)
    assert "merge them into this block's 7 layers, one step each" in tip
    mime = _drag(donor, "model.layers.0")
    ok, text, steps = base.evaluate_drop(mime, -1, base.index_of("model.layers.1"))
    assert ok and text == ("block b:model.layers.0 \u2192 model.layers.1: 7 steps, one per "
                           "layer; its norms input_layernorm, post_attention_layernorm merge "
                           "with q_proj")
    parts = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    with qtbot.waitSignal(base.dropHint) as hint:
        assert base.dropMimeData(mime, COPY, -1, 0, base.index_of("model.layers.1"))
    assert hint.args == ["Added steps 1\u20137: block b:model.layers.0 \u2192 model.layers.1, "
                         "one step per layer (Ctrl+Z undoes it as one edit)", True]
    assert [(s.source_layer, s.base_layer) for s in ws.plan.steps] == [
        (f"model.layers.0.{p}", f"model.layers.1.{p}") for p in parts]
    assert ws.plan.steps[0].norms == (
        ("model.layers.0.input_layernorm", "model.layers.1.input_layernorm"),
        ("model.layers.0.post_attention_layernorm", "model.layers.1.post_attention_layernorm"))
    from mal_desktop.gui.models.plan_model import COL_BASE, QtPlanModel

    plan = QtPlanModel(ws)  # the plan says which step carries the norms
    assert plan.data(plan.index(0, COL_BASE)) == "model.layers.1.self_attn.q_proj\n+ 2 norms"
    assert plan.data(plan.index(1, COL_BASE)) == "model.layers.1.self_attn.k_proj"
    plan.detach()
    assert ws.undo_stack.undoText() == "Merge block b:model.layers.0 \u2192 model.layers.1"
    ws.undo_stack.undo()
    assert ws.plan.steps == []
    # an attention block holds other layers than an MLP block
    ok, text, _ = base.evaluate_drop(_drag(donor, "model.layers.0.self_attn"), -1,
                                     base.index_of("model.layers.0.mlp"))
    assert not ok and text == (
        "Cannot merge block b:model.layers.0.self_attn into model.layers.0.mlp: "
        "model.layers.0.self_attn and model.layers.0.mlp hold different layers (only "
        "model.layers.0.self_attn has k_proj, o_proj, q_proj, v_proj; only model.layers.0.mlp "
        "has down_proj, gate_proj, up_proj): merge their layers one by one")
    ok, text, _ = base.evaluate_drop(mime, -1, base.index_of("model.layers.0.mlp.up_proj"))
    assert not ok and text.startswith("Drop block b:model.layers.0 onto a block of the base")


def test_a_layer_is_planned_once_and_a_block_takes_the_place_of_its_layers_steps(qtbot,
                                                                                 tmp_path):
    """The language demo opens with an example step (k_proj -> k_proj); dropping that block
    afterwards planned k_proj twice, and the assembly merged the merged layer again."""
    ws, base, donor = _llama_pair(tmp_path)
    k = "model.layers.0.self_attn.k_proj"
    first = ws.add_step(AssemblyStep("b", k, k, lam=0.3))
    assert first.ok
    # the same layer again: refused, by drop and by the Add Step path alike
    again = base.index_of(k)
    ok, text, _ = base.evaluate_drop(_drag(donor, k), -1, again)
    assert not ok and text == (f"Cannot merge b:{k} \u2192 {k}: it is already step 1: select "
                               "that step to change its \u03bb or method")
    assert not base.dropMimeData(_drag(donor, k), COPY, -1, 0, again)
    assert not ws.add_step(AssemblyStep("b", k, k, lam=0.7)).ok
    assert len(ws.plan.steps) == 1 and ws.undo_stack.count() == 1
    # its block: the block's steps take the place of step 1, as one edit
    block = _drag(donor, "model.layers.0")
    ok, text, _ = base.evaluate_drop(block, -1, base.index_of("model.layers.0"))
    assert ok and text.endswith("merge with q_proj; replaces step 1 (the same layer)")
    with qtbot.waitSignal(base.dropHint) as hint:
        assert base.dropMimeData(block, COPY, -1, 0, base.index_of("model.layers.0"))
    assert hint.args[0].startswith("Added steps 1\u20137: block b:model.layers.0")
    assert "; replaces step 1 (the same layer) (Ctrl+Z" in hint.args[0]
    routes = [s.route for s in ws.plan.steps]
    assert len(routes) == 7 and len(set(routes)) == 7 and ws.plan.repeated_steps() == []
    assert ws.plan.steps[1].source_layer == k and ws.plan.steps[1].lam == 0.5
    ws.undo_stack.undo()  # one Ctrl+Z: the example step is back, as it was
    assert ws.plan.steps == [first.step]


def _shown_pane(qtbot, pane: LayerTreePane, width: int) -> LayerTreePane:
    """``pane`` on screen, ``width`` px wide and 300 high."""
    qtbot.addWidget(pane)
    pane.resize(width, 300)
    pane.show()
    qtbot.waitExposed(pane)
    return pane


def test_tree_columns_follow_the_pane_until_the_user_sizes_one(qtbot, ws: Workspace) -> None:
    """A model opened with the window was fitted while its pane had no width yet: names stayed
    a hundred pixels wide ('embe...') in a 500 px pane."""
    from mal_desktop.gui.models.layer_text import COL_NAME, COL_PARAMS, COL_SHAPE

    pane = _shown_pane(qtbot, LayerTreePane(ws, "zoo", "zoo_cnn"), 200)
    header = pane.view.header()
    narrow = header.sectionSize(COL_NAME)
    pane.resize(900, 300)
    qtbot.waitUntil(lambda: header.sectionSize(COL_NAME) > narrow)
    wide = header.sectionSize(COL_NAME)
    assert wide >= pane.view.sizeHintForColumn(COL_NAME)  # names whole once there is room
    for col in (COL_SHAPE, COL_PARAMS):
        assert header.sectionSize(col) >= pane.view.sizeHintForColumn(col)
    header.resizeSection(COL_NAME, wide - 30)  # the user's width stays from now on
    pane.resize(300, 300)
    qtbot.wait(20)
    assert header.sectionSize(COL_NAME) == wide - 30


def test_tree_names_refit_when_a_step_marks_a_layer(qtbot, ws: Workspace) -> None:
    """A step's marker ('1 · linear → step 1', in bold) was cut to '1 · linear → …' in the base
    pane: the pane's own fits had marked its columns as sized by the user (a fit resizes the
    viewport, whose resize fitted again inside the first fit and ended its guard early), and
    names were fitted only when the model or the pane's width changed."""
    from mal_desktop.gui.models.layer_text import COL_NAME

    pane = _shown_pane(qtbot, LayerTreePane(ws, "base"), 600)
    header = pane.view.header()
    before = header.sectionSize(COL_NAME)
    assert before >= pane.view.sizeHintForColumn(COL_NAME)
    ws.add_step(AssemblyStep("zoo_mlp", "layers.1", "layers.1", 0.5, "chain"))
    qtbot.waitUntil(lambda: header.sectionSize(COL_NAME) > before)
    assert header.sectionSize(COL_NAME) >= pane.view.sizeHintForColumn(COL_NAME)
    header.resizeSection(COL_NAME, before)  # the user's width stays, marker or not
    ws.add_step(AssemblyStep("zoo_mlp", "layers.0", "layers.0", 0.5, "chain"))
    qtbot.wait(20)
    assert header.sectionSize(COL_NAME) == before


def test_a_donor_of_another_kind_of_data_merges_with_a_note(qtbot, tmp_path) -> None:
    """An image MLP's layer onto a language model's MLP fits by shape and showed a plain green
    hint: now the hint says the donor reads other data, and the step can still be added."""
    ws, base, _donor = _llama_pair(tmp_path)
    ws.add_zoo(entry("zoo_mlp"))
    mlp = QtLayerTreeModel(ws.zoo["zoo_mlp"].tree, "zoo", "zoo_mlp", ws)
    ok, text, steps = base.evaluate_drop(_drag(mlp, "layers.1"), -1,
                                         base.index_of("model.layers.0.mlp.up_proj"))
    assert ok and len(steps) == 1
    assert text.endswith("\u2014 note: zoo_mlp reads images or features, the base token ids "
                         "(a language model): its units learned other features")
    same_kind = base.evaluate_drop(_drag(_donor, "model.layers.0.mlp.up_proj"), -1,
                                   base.index_of("model.layers.0.mlp.up_proj"))
    assert same_kind[0] and "note:" not in same_kind[1]
