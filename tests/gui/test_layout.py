"""The first window on a 1600 x 1000 and a 1280 x 720 screen, at 1x and at 2x scaling
(QT_SCALE_FACTOR=2).

Each case runs in a subprocess: the offscreen platform is given a screen of that size (a config
file), and the scale factor must be set before Qt starts. The window must fit the screen with
its status bar on it, every plot must be drawn at least at its usable minimum, the step list
must show several steps, and every column of the plan must be in view, whole (none hidden, none
narrower than its contents, no horizontal scroll bar).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from screen_probe import run_on_screen

pytestmark = pytest.mark.gui

PROBE = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QPoint
app = QApplication([])
from layer_fixtures import loaded, tree
from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.plots.plot_grid import PlotGrid
from mal_desktop.gui.settings import Settings
from mal_desktop.gui.workspace import ModelEntry, Workspace

# Named like the demo zoo's models: the plan's columns are measured on realistic names.
# (Built first: the engine's start-up in the worker must not trace a model at the same time.)
models = [ModelEntry(name, None, loaded(fixture), tree(fixture))
          for name, fixture in (("mlp-w64-s0", "base_mlp"), ("mlp-w128-s0", "zoo_mlp"))]
ws = Workspace()
settings = Settings(Path(sys.argv[2]) / "settings.ini")
settings.demo_offered = True
w = MainWindow(settings, ws)
w.show()
w.start_up()
def pump(n=40):
    for _ in range(n):
        app.processEvents()
pump()  # the default layout is made while the welcome page shows, as at a first launch
ws.set_base(models[0])
ws.add_zoo(models[1])
for layer, method in (("layers.0", "linear"), ("layers.1", "ties"), ("layers.2", "linear")):
    ws.add_step(AssemblyStep("mlp-w128-s0", layer, layer, 0.5, "chain", method=method))
# What a run shows: a 64 x 128 permutation (the demo's second step), costs, J per iteration.
import numpy as np
from mal_desktop.core.merge.results import SideReport, StepDiagnostics
q = np.zeros((64, 128), np.float32)
q[np.arange(64), np.random.default_rng(0).permutation(128)[:64]] = 1
w.views.diagnostics.show_step(StepDiagnostics(
    1, "mlp-w128-s0:layers.0 -> layers.0", "chain",
    "out: base narrower 64 <- 128 (drop 64); in: equal 64 (fixed)",
    SideReport(64, 128, "narrower", 64, 0, 64), SideReport(64, 64, "fixed", 64, 0, 0),
    objective=(75.0, 108.0, 108.2), costs=np.linspace(0.2, 3.8, 64), out_matrix=q))
pump(80)
area = w.screen().availableGeometry()
bar = w.statusBar()
bar_bottom = bar.mapToGlobal(QPoint(0, bar.height())).y()
def in_viewport(grid, item, rect):
    """``rect`` of ``item`` in the coordinates of the grid's scroll-area viewport."""
    g = grid.graphics
    poly = g.mapFromScene(item.mapRectToScene(rect))
    r = poly.boundingRect().translated(g.mapTo(grid.area.viewport(), QPoint(0, 0)))
    return [r.left(), r.top(), r.right() + 1, r.bottom() + 1]

plots, labels, grids = [], [], []
for name in ("curve", "diagnostics", "evaluate"):
    dock = w.dock_layout.docks[name]
    dock.raise_()
    pump(20)
    for grid in w.findChildren(PlotGrid):
        if not grid.isVisible() or not dock.isAncestorOf(grid):
            continue
        vp = grid.area.viewport()
        grids.append([name, grid.page_count, vp.width(), vp.height(),
                      grid.area.verticalScrollBar().isVisible(),
                      grid.area.horizontalScrollBar().isVisible()])
        seen = []
        for page in range(grid.page_count):
            grid.pages.setCurrentIndex(page)
            pump(10)
            for plot in grid.visible_plots():
                seen.append(grid.plots.index(plot))
                r = plot.sceneBoundingRect()
                plots.append([name, page, r.width(), r.height(),
                              grid.minimum_plot_size().width(),
                              grid.minimum_plot_size().height(),
                              in_viewport(grid, plot, plot.boundingRect()),
                              [vp.width(), vp.height()]])
                for side in ("left", "bottom"):
                    axis = plot.getAxis(side)
                    if axis.isVisible() and axis.label.isVisible():
                        labels.append([name, side, axis.labelText,
                                       in_viewport(grid, axis.label, axis.label.boundingRect()),
                                       in_viewport(grid, plot, plot.boundingRect())])
        grids[-1].append(sorted(seen))
        grid.pages.setCurrentIndex(0)
view = w.views.assembly_panel.view
row = view.sizeHintForRow(0) if view.model().rowCount() else 20
header = view.header()
columns = [[c, view.isColumnHidden(c), header.sectionSize(c), view.sizeHintForColumn(c),
            header.sectionSizeHint(c), header.sectionViewportPosition(c)]
           for c in range(view.model().columnCount())]
from mal_desktop.gui.models.layer_text import COL_NAME, COL_PARAMS, COL_SHAPE
tree_view = w.views.base_pane.view
tree_header = tree_view.header()
base_columns = [[c, tree_header.sectionViewportPosition(c), tree_header.sectionSize(c),
                 tree_view.sizeHintForColumn(c)] for c in (COL_NAME, COL_SHAPE, COL_PARAMS)]
print(json.dumps({
    "base_columns": base_columns, "base_viewport": tree_view.viewport().width(),
    "trees": [w.dock_layout.docks["base"].width(), w.centralWidget().width()],
    "dpr": w.devicePixelRatioF(), "area": [area.width(), area.height()],
    "window": [w.frameGeometry().x(), w.frameGeometry().y(), w.frameGeometry().width(),
               w.frameGeometry().height()],
    "min_hint": [w.minimumSizeHint().width(), w.minimumSizeHint().height()],
    "bar_bottom": bar_bottom, "bar_visible": bar.isVisible(), "area_bottom": area.bottom() + 1,
    "plots": plots, "list_rows": view.viewport().height() / max(1, row),
    "slider": w.views.assembly_panel.lam_slider.width(),
    "columns": columns, "plan_viewport": view.viewport().width(),
    "grids": grids, "labels": labels,
    "plan_hbar": view.horizontalScrollBar().isVisible(),
}))
w.workspace.undo_stack.setClean()
w.session.mark_clean()
w.shutdown()
'''


def probe(tmp_path: Path, screen: tuple[int, int], scale: int) -> dict:
    return run_on_screen(PROBE, [str(Path(__file__).parent), str(tmp_path)], tmp_path, screen,
                         scale)


CASES = {"1600x1000": ((1600, 1000), 1), "1280x720": ((1280, 720), 1),
         "2x-scale": ((2560, 1440), 2)}


@pytest.fixture(scope="module", params=list(CASES))
def first_window(request, tmp_path_factory) -> tuple[str, dict]:
    """The probe of each screen, run once per module: (case name, measurements)."""
    screen, scale = CASES[request.param]
    return request.param, probe(tmp_path_factory.mktemp(request.param), screen, scale)


def test_first_window_fits_the_screen_and_plots_keep_their_minimum(first_window) -> None:
    case, m = first_window
    logical = [s // CASES[case][1] for s in CASES[case][0]]
    assert m["dpr"] == CASES[case][1] and m["area"] == logical
    x, y, width, height = m["window"]
    assert x >= 0 and y >= 0 and x + width <= logical[0] and y + height <= logical[1], m["window"]
    assert m["min_hint"][0] <= 1280 and m["min_hint"][1] <= 720 - 40, m["min_hint"]
    assert m["bar_visible"] and m["bar_bottom"] <= m["area_bottom"]  # status bar on screen
    assert {p[0] for p in m["plots"]} == {"curve", "diagnostics", "evaluate"}
    assert height <= logical[1] - 40, m["window"]  # room for a window manager's title bar
    for name, _page, w, h, min_w, min_h, _rect, _vp in m["plots"]:  # never squeezed
        assert w >= min_w - 1 and h >= min_h - 1, (name, w, h)
    assert m["list_rows"] >= 3, m["list_rows"]  # the plan list shows three (two-line) steps
    assert m["slider"] >= 120


def test_every_plan_column_is_in_view_whole(first_window) -> None:
    """Width case, method and alignment used to fold into the tooltip at the default width."""
    case, m = first_window
    assert not m["plan_hbar"], case
    for col, hidden, width, contents, header, left in m["columns"]:
        assert not hidden, (case, col)
        assert width >= max(contents, header), (case, col, width, contents, header)
        assert 0 <= left and left + width <= m["plan_viewport"], (case, col, left, width)


def test_the_base_tree_shows_name_shape_and_parameters_whole(first_window) -> None:
    """The base pane showed 'Par' for its parameter column at every screen size."""
    case, m = first_window
    (_, name_left, name_width, _), *counts = m["base_columns"]
    assert name_left == 0 and name_width >= 120, (case, m["base_columns"])
    for col, left, width, contents in counts:  # shape and parameters: in view and whole
        assert width >= contents and left + width <= m["base_viewport"], (
            case, col, left, width, contents, m["base_viewport"])


def test_base_and_zoo_trees_are_side_by_side_at_equal_widths(first_window) -> None:
    """The base tree had a quarter of the window and the zoo twice its width: the trees are
    read row against row, and the base's names were the ones cut."""
    case, m = first_window
    base, zoo = m["trees"]
    assert abs(base - zoo) <= 0.1 * max(base, zoo), (case, m["trees"])


def test_every_plot_is_whole_in_view_without_scrolling(first_window) -> None:
    """At 1280 x 720 the plots used to sit in a scroll area that had to be scrolled to see an x
    axis; a panel too short for all its plots now shows them in pages, each page whole."""
    case, m = first_window
    for name, pages, _w, _h, vbar, hbar, seen in m["grids"]:
        assert not vbar and not hbar, (case, name)
        assert seen == list(range(len(seen))) and seen, (case, name)  # every plot on a page
    for name, page, _w, _h, _mw, _mh, (left, top, right, bottom), (vw, vh) in m["plots"]:
        assert left >= 0 and top >= 0 and right <= vw and bottom <= vh, (
            case, name, page, (left, top, right, bottom), (vw, vh))
    if case == "1600x1000":  # room for every plot at once
        assert all(pages == 1 for _n, pages, *_ in m["grids"]), m["grids"]


def test_axis_titles_fit_inside_their_plots(first_window) -> None:
    """Diagnostics' bottom axis titles were cut at 1600 x 1000 after a run: pyqtgraph reserves
    80 % of a label's height and draws it 5 px lower, so in the last row it hung over the
    scene's edge. Every axis title lies inside its plot and the visible viewport."""
    case, m = first_window
    names = {(name, side, text) for name, side, text, _label, _plot in m["labels"]}
    assert ("diagnostics", "bottom", "similarity (higher: closer match)") in names
    assert ("diagnostics", "bottom", "iteration") in names
    for name, side, text, label, plot in m["labels"]:
        assert label[0] >= plot[0] and label[1] >= plot[1], (case, name, side, text, label, plot)
        assert label[2] <= plot[2] and label[3] <= plot[3], (case, name, side, text, label, plot)
