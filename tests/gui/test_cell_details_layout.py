"""The Evaluate panel's drill-down after a cell is clicked, in the real window on a 1600 x 1000
and a 1280 x 720 screen and at 2x scaling (QT_SCALE_FACTOR=2), each in a subprocess as in
test_layout.py.

The confusion matrix's right-most column (true 9 / predicted 9) read as cut at the panel's right
edge in docs/screenshots/evaluate.png. Measured: the plot items fit the viewport and the
aspect-locked view range keeps both axes whole, but the drill-down is the right-most widget of
the window and a pyqtgraph plot has no right axis, so the data ran to 3 px of the window's edge.
Every plot of a PlotGrid now keeps a right margin; these tests check the whole chain: the full
view rectangle in the view box, the view box in the plot, the plot in the visible viewport, and
room between the data's right edge and the viewport's.
"""

from __future__ import annotations

import pytest
from screen_probe import run_on_screen

pytestmark = pytest.mark.gui

PROBE = r'''
import json, sys
from pathlib import Path
import numpy as np
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt
app = QApplication([])
from mal_desktop.core.evaluate.metric_registry import SampleScores
from mal_desktop.core.toolkit.matrix import MatrixCell, _write_samples
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.settings import Settings
from mal_desktop.gui.workspace import Workspace

tmp, layout = Path(sys.argv[1]), sys.argv[2]
settings = Settings(tmp / "settings.ini")
settings.demo_offered = True
w = MainWindow(settings, Workspace())
if layout == "screenshot":  # what scripts/screenshots.py shoots: the whole screen
    w.setGeometry(w.screen().availableGeometry())
w.show()
w.start_up()
def pump(n=40):
    for _ in range(n):
        app.processEvents()
pump()
if layout == "screenshot":  # the whole bottom for the panel, as in evaluate.png
    w.curve_dock.hide()
    w.resizeDocks([w.evaluate_dock], [int(w.height() * 0.55)], Qt.Orientation.Vertical)
w.evaluate_dock.raise_()
pump()
# A real cell: ten classes of digits with a few confusions, its scores in an .npz as the cache
# keeps them, selected in the table as a click does.
labels = np.repeat(np.arange(10), 36)
preds = labels.copy()
preds[::7] = (preds[::7] + 1) % 10
scores = SampleScores(labels, preds, preds == labels, np.full(360, 0.3), np.full(360, 0.9),
                      np.array([str(v) for v in labels]), 10)
npz = tmp / "cell.npz"
_write_samples(npz, scores)
panel = w.views.evaluate_panel
panel.model.set_layout([("merged", "merged (current plan)")], ["digits"])
panel.model.set_cell(MatrixCell("merged", "digits", "k", {"accuracy": float(np.mean(
    preds == labels)), "loss": 0.3}, {}, 360, False, str(npz)))
panel.select_cell(0, 1)
pump(80)
d = panel.details
grid, g = d.grid, d.grid.graphics
vp = grid.area.viewport()
def in_viewport(item, rect, scene=None):
    """``rect`` of ``item`` (or a polygon in the scene) in the viewport's coordinates."""
    poly = g.mapFromScene(item.mapRectToScene(rect) if scene is None else scene)
    r = poly.boundingRectF() if hasattr(poly, "boundingRectF") else QRectF(poly.boundingRect())
    off = g.mapTo(vp, QPoint(0, 0))
    return [r.left() + off.x(), r.top() + off.y(), r.right() + off.x(), r.bottom() + off.y()]
n = d.scores.num_classes if d.scores is not None else 0
plots = {}
for name, plot, full in (("accuracy", d.bar_plot, QRectF(-0.5, 0, n, 1.0)),
                         ("confusion", d.conf_plot, QRectF(-0.5, -0.5, n, n))):
    grid.show_plot(plot)  # paged when the panel is short: each plot's page in turn
    pump(20)
    vb = plot.getViewBox()
    view = vb.viewRect()
    plots[name] = {
        "view": [view.left(), view.top(), view.right(), view.bottom()],
        "full": [full.left(), full.top(), full.right(), full.bottom()],
        "plot": in_viewport(plot, plot.boundingRect()),
        "viewbox": in_viewport(vb, vb.boundingRect()),
        # through the view box's own mapping (its transform is updated lazily, before paint)
        "data": in_viewport(vb, full, vb.mapViewToScene(full)),
        "visible": plot in grid.visible_plots(),
    }
print(json.dumps({"n": n, "viewport": [vp.width(), vp.height()],
                  "vbar": grid.area.verticalScrollBar().isVisible(),
                  "hbar": grid.area.horizontalScrollBar().isVisible(),
                  "pages": grid.page_count, "plots": plots}))
w.workspace.undo_stack.setClean()
w.session.mark_clean()
w.shutdown()
'''

CASES = {"1600x1000": ((1600, 1000), 1, "screenshot"),
         "1600x1000-first": ((1600, 1000), 1, "first"),
         "1280x720": ((1280, 720), 1, "first"),
         "2x-scale": ((2560, 1440), 2, "first")}
EDGE_ROOM = 6  # logical px between the data and the viewport's right edge


@pytest.fixture(scope="module", params=list(CASES))
def drill_down(request, tmp_path_factory) -> tuple[str, dict]:
    """(case name, measurements of the drill-down after a cell was selected)."""
    screen, scale, layout = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    return request.param, run_on_screen(PROBE, [str(tmp), layout], tmp, screen, scale)


def _inside(inner: list[float], outer: list[float], tol: float = 0.5) -> bool:
    return (inner[0] >= outer[0] - tol and inner[1] >= outer[1] - tol and
            inner[2] <= outer[2] + tol and inner[3] <= outer[3] + tol)


def test_drill_down_plots_show_every_class_whole(drill_down) -> None:
    """Both axes' full range (-0.5 .. n-0.5) is in the view box, the view box in its plot, the
    plot in the visible viewport, with nothing to scroll and every plot on one page."""
    case, m = drill_down
    assert m["n"] == 10, case
    assert not m["vbar"] and not m["hbar"], (case, m)
    if case.startswith("1600"):  # room for both plots at once
        assert m["pages"] == 1, (case, m)
    vw, vh = m["viewport"]
    for name, p in m["plots"].items():
        assert p["visible"], (case, name)
        view, full = p["view"], p["full"]
        # the view range holds every class on x (and, for the matrix, every row on y)
        assert view[0] <= full[0] + 1e-6 and view[2] >= full[2] - 1e-6, (case, name, view)
        if name == "confusion":
            assert view[1] <= full[1] + 1e-6 and view[3] >= full[3] - 1e-6, (case, name, view)
        assert _inside(p["data"], p["viewbox"]), (case, name, p)
        assert _inside(p["viewbox"], p["plot"]), (case, name, p)
        assert _inside(p["plot"], [0, 0, vw, vh]), (case, name, p, (vw, vh))


def test_last_column_keeps_room_at_the_panel_edge(drill_down) -> None:
    """The matrix's right-most column (and the accuracy plot's last bar) ends clear of the
    panel's right edge, which is the window's: it used to run to 3 px of it and read as cut."""
    case, m = drill_down
    vw = m["viewport"][0]
    for name, p in m["plots"].items():
        assert p["data"][2] <= vw - EDGE_ROOM, (case, name, p["data"], vw)
        assert p["viewbox"][2] <= vw - EDGE_ROOM, (case, name, p["viewbox"], vw)
