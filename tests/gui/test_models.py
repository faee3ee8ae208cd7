"""Item models over core documents: QAbstractItemModelTester on each, plus what rows show."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from layer_fixtures import entry, tree  # noqa: E402
from PySide6.QtCore import QModelIndex, Qt  # noqa: E402

from mal_desktop.core.merge.plan import AssemblyStep  # noqa: E402
from mal_desktop.gui.models.layer_tree_model import (COL_NAME, COL_PARAMS,  # noqa: E402
                                                     COL_SHAPE, COL_SPACE, COL_STATS,
                                                     FIXED_ROLE, IS_LAYER_ROLE, REPEAT_ROLE,
                                                     QtLayerTreeModel)
from mal_desktop.core.merge.case_words import (compact_case,  # noqa: E402
                                               counts_in_case_units, explain_case,
                                               rows_per_unit, side_units, unit_of)
from mal_desktop.gui.models.plan_model import COL_CASE, QtPlanModel  # noqa: E402
from mal_desktop.gui.undo import AddStepCommand, MoveStepCommand  # noqa: E402
from mal_desktop.gui.models.layer_filter import LayerFilterProxy  # noqa: E402
from mal_desktop.gui.views.layer_tree_view import LayerTreePane  # noqa: E402
from mal_desktop.gui.workspace import Workspace  # noqa: E402

pytestmark = pytest.mark.gui


def _walk(model, parent=None):
    parent = QModelIndex() if parent is None else parent
    for r in range(model.rowCount(parent)):
        index = model.index(r, 0, parent)
        yield index
        yield from _walk(model, index)


@pytest.mark.parametrize("name", ["base_mlp", "zoo_cnn", "resnet"])
def test_layer_tree_model_passes_modeltester(qapp, qtmodeltester, name: str) -> None:
    model = QtLayerTreeModel(tree(name), "zoo")
    qtmodeltester.check(model)
    paths = {model.data(i, Qt.ItemDataRole.UserRole + 10) for i in _walk(model)}
    assert {n.path for n in tree(name).root.walk() if n.path} <= paths


def test_layer_rows_show_shape_params_space_and_stats(qapp) -> None:
    model = QtLayerTreeModel(tree("base_mlp"), "base")
    head = model.index_of("head")
    assert head.isValid() and model.data(head, IS_LAYER_ROLE)
    row = lambda col: model.data(head.siblingAtColumn(col))  # noqa: E731
    assert row(COL_NAME).startswith("head")
    assert row(COL_SHAPE) == "10 \u00d7 64"
    assert row(COL_PARAMS) == f"{64 * 10 + 10:,}"
    from mal_desktop.gui.models.layer_text import count_text

    # a 7B model's counts fit the column; its tooltip gives the exact number
    assert [count_text(n) for n in (999_999, 202_383_360, 6_738_415_616)] == [
        "999,999", "202.4 M", "6.74 B"]
    tip = model.data(head.siblingAtColumn(COL_PARAMS), Qt.ItemDataRole.ToolTipRole)
    assert f"{64 * 10 + 10:,} parameters" in tip
    assert "P_head (10, fixed)" in row(COL_SPACE) and "in P_layers.1 (64)" in row(COL_SPACE)
    weight = next(t for t in tree("base_mlp").find("head").tensors if t.key == "head.weight")
    assert f"{weight.norm:.3g}" in row(COL_STATS)
    # The class output axis is marked fixed, with the reason in the tooltip.
    assert model.data(head, FIXED_ROLE) is True
    tip = model.data(head.siblingAtColumn(COL_SPACE), Qt.ItemDataRole.ToolTipRole)
    assert "axis 0 is fixed: class output" in tip
    assert "permutation space" in tip.lower()
    assert model.data(head.siblingAtColumn(COL_SPACE), Qt.ItemDataRole.DecorationRole) is not None
    first = model.index_of("layers.0")
    assert "axis 1 is fixed: network input" in model.data(first.siblingAtColumn(COL_SPACE),
                                                          Qt.ItemDataRole.ToolTipRole)
    hidden = model.index_of("layers.1")
    assert model.data(hidden, FIXED_ROLE) is False
    # Tensor rows under a layer: weight and bias with their own shapes.
    kids = [model.data(model.index(r, COL_SHAPE, hidden)) for r in range(model.rowCount(hidden))]
    assert kids == ["64 \u00d7 128", "64"]


def test_repeated_blocks_are_labelled_and_start_collapsed(qtbot) -> None:
    model = QtLayerTreeModel(tree("resnet"), "zoo")
    b0, b1 = model.index_of("blocks.0"), model.index_of("blocks.1")
    assert model.data(b0, REPEAT_ROLE) == 2 and model.data(b1, REPEAT_ROLE) == 2
    assert "(\u00d72 alike)" in model.data(b0)
    assert "(like 0)" in model.data(b1)
    assert model.data(model.index_of("stem"), REPEAT_ROLE) == 0
    ws = Workspace()
    ws.add_zoo(entry("resnet"))
    pane = LayerTreePane(ws, "zoo", "resnet")
    qtbot.addWidget(pane)
    assert pane.view.isExpanded(pane.proxy_index("blocks"))
    assert not pane.view.isExpanded(pane.proxy_index("blocks.0"))
    assert not pane.view.isExpanded(pane.proxy_index("blocks.1"))


def test_search_proxy_passes_modeltester_and_filters(qapp, qtmodeltester) -> None:
    model = QtLayerTreeModel(tree("zoo_cnn"), "zoo")
    proxy = LayerFilterProxy()
    proxy.setSourceModel(model)
    qtmodeltester.check(proxy)
    proxy.set_query("fc")
    shown = {proxy.data(i, Qt.ItemDataRole.UserRole + 10) for i in _walk(proxy)}
    assert "fc" in shown and "head" not in shown
    proxy.set_query("16x8x3x3")  # a shape query finds the second conv (16 out, 8 in)
    shown = {proxy.data(i, Qt.ItemDataRole.UserRole + 10) for i in _walk(proxy)}
    assert "features.2.0" in shown and "features.0.0" not in shown
    assert "features" in shown  # ancestors stay so the match has a place in the tree
    proxy.set_query("16, 8, 3, 3")
    assert "features.2.0" in {proxy.data(i, Qt.ItemDataRole.UserRole + 10)
                              for i in _walk(proxy)}
    proxy.set_query("no-such-layer")
    assert proxy.rowCount() == 0
    qtmodeltester.check(proxy)
    proxy.set_query("")
    assert proxy.rowCount() == model.rowCount()


def test_pane_search_box_filters(qtbot) -> None:
    ws = Workspace()
    ws.add_zoo(entry("zoo_mlp"))
    pane = LayerTreePane(ws, "zoo", "zoo_mlp")
    qtbot.addWidget(pane)
    pane.search.setText("head")
    qtbot.waitUntil(lambda: pane.proxy.query == "head", timeout=2000)
    assert pane.proxy_index("head").isValid()
    assert not pane.proxy_index("layers.0").isValid()


def test_plan_model_with_steps_passes_modeltester(qapp, qtmodeltester) -> None:
    ws = Workspace()
    ws.set_base(entry("base_mlp"))
    ws.add_zoo(entry("zoo_mlp"))
    for layer in ("layers.0", "layers.1", "head"):
        ws.push(AddStepCommand(ws.plan, AssemblyStep("zoo_mlp", layer, layer)))
    model = QtPlanModel(ws)
    qtmodeltester.check(model)
    case = model.data(model.index(0, COL_CASE))
    assert case == "out 128\u219064 pad\nin 64 fixed"  # compact: one side per line
    assert compact_case("out: base wider 128 <- 64 (zero-pad 64); in: equal 64 (fixed)") == \
        "out 128\u219064 zero-pad 64 \u00b7 in 64 fixed"  # the one-line form keeps the counts
    tip = model.data(model.index(0, COL_CASE), Qt.ItemDataRole.ToolTipRole)
    assert "out: base wider 128 <- 64 (zero-pad 64); in: equal 64 (fixed)" in tip
    assert "zero-pad N: N base units" in tip and "fixed: these units cannot be reordered" in tip
    ws.push(MoveStepCommand(ws.plan, 0, 2))
    ws.undo_stack.undo()
    qtmodeltester.check(model)


def test_layer_rows_mark_layers_used_by_steps(qapp) -> None:
    ws = Workspace()
    ws.set_base(entry("base_mlp"))
    ws.add_zoo(entry("zoo_mlp"))
    base = QtLayerTreeModel(tree("base_mlp"), "base", "base_mlp", ws)
    zoo = QtLayerTreeModel(tree("zoo_mlp"), "zoo", "zoo_mlp", ws)
    ws.push(AddStepCommand(ws.plan, AssemblyStep("zoo_mlp", "layers.1", "layers.0")))
    assert model_text(base, "layers.0").endswith("\u2192 step 1")
    assert model_text(zoo, "layers.1").endswith("\u2192 step 1")
    assert "step" not in model_text(zoo, "layers.0")
    ws.undo_stack.undo()
    assert "step" not in model_text(base, "layers.0")


def model_text(model: QtLayerTreeModel, path: str) -> str:
    return model.data(model.index_of(path))


def test_case_units_and_rows_per_unit() -> None:
    case = "out: base wider 4 <- 2 (zero-pad 2); in: equal 784 (fixed)"
    assert side_units(case) == {"out": (4, 2), "in": (784, 784)}
    assert rows_per_unit(case, "out", 64, 32) == 16  # heads of 16 dims
    assert rows_per_unit(case, "out", 4, 2) == 1  # counted alike
    assert rows_per_unit(case, "out", 64, 33) == 1  # not blocks of one size: no claim
    assert rows_per_unit(case, "in", 784, 784) == 1
    assert rows_per_unit("something else", "out", 64, 32) == 1


def test_a_case_in_heads_names_them_in_the_step_column() -> None:
    """The step table showed "out 4\u21902 pad" for a 64 x 128 key projection: 4 of what? It
    now counts rows, as the trees' Shape column does; the one-line form names the unit."""
    case = "out: base wider 4 <- 2 heads of 16 (zero-pad 2); in: equal 128"
    assert compact_case(case, "\n", counts=False, rows=True) == "out 64\u219032 pad\nin 128"
    assert compact_case(case, counts=False) == "out 4\u21902 heads pad \u00b7 in 128"
    assert compact_case(case, rows=True) == "out 64\u219032 zero-pad 32 \u00b7 in 128"
    assert side_units(case) == {"out": (4, 2), "in": (128, 128)}
    assert unit_of(case, "out") == "heads" and unit_of(case, "in") == ""
    assert "heads of N: the side is counted in attention heads" in explain_case(case)
    assert counts_in_case_units(case, "out", 64, 32, (32, 32, 0)) == [2, 2, 0]
    grouped = "out: equal 128; in: base narrower 2 <- 4 head groups of 32 (drop 2)"
    assert compact_case(grouped) == "out 128 \u00b7 in 2\u21904 head groups drop 2"
    assert "heads of N" not in explain_case(grouped) and "head groups of N" in explain_case(grouped)
