"""The first window on a 1280 x 720 screen, at 1x and at 2x scaling (QT_SCALE_FACTOR=2).

Each case runs in a subprocess: the offscreen platform is given a screen of that size (a config
file), and the scale factor must be set before Qt starts. The window must fit the screen with
its status bar on it, every plot must be drawn at least at its usable minimum (a panel that is
too short scrolls instead of clipping or squeezing), and the step list must show several rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]

PROBE = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QPoint
app = QApplication([])
from layer_fixtures import entry
from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.plots.plot_grid import PlotGrid
from mal_desktop.gui.settings import Settings
from mal_desktop.gui.workspace import Workspace

ws = Workspace()
ws.set_base(entry("base_mlp"))
ws.add_zoo(entry("zoo_mlp"))
settings = Settings(Path(sys.argv[2]) / "settings.ini")
settings.demo_offered = True
w = MainWindow(settings, ws)
w.show()
w.start_up()
def pump(n=40):
    for _ in range(n):
        app.processEvents()
pump()
for layer in ("layers.0", "layers.1", "layers.2"):
    ws.add_step(AssemblyStep("zoo_mlp", layer, layer))
pump(80)
area = w.screen().availableGeometry()
bar = w.statusBar()
bar_bottom = bar.mapToGlobal(QPoint(0, bar.height())).y()
plots = []
for name in ("curve", "diagnostics", "evaluate"):
    dock = w.dock_layout.docks[name]
    dock.raise_()
    pump(20)
    for grid in w.findChildren(PlotGrid):
        if not grid.isVisible() or not dock.isAncestorOf(grid):
            continue
        for plot in grid.plots:
            r = plot.sceneBoundingRect()
            plots.append([name, r.width(), r.height(), grid.minimum_plot_size().width(),
                          grid.minimum_plot_size().height()])
view = w.views.assembly_panel.view
row = view.sizeHintForRow(0) if view.model().rowCount() else 20
print(json.dumps({
    "dpr": w.devicePixelRatioF(), "area": [area.width(), area.height()],
    "window": [w.frameGeometry().x(), w.frameGeometry().y(), w.frameGeometry().width(),
               w.frameGeometry().height()],
    "min_hint": [w.minimumSizeHint().width(), w.minimumSizeHint().height()],
    "bar_bottom": bar_bottom, "bar_visible": bar.isVisible(), "area_bottom": area.bottom() + 1,
    "plots": plots, "list_rows": view.viewport().height() / max(1, row),
    "slider": w.views.assembly_panel.lam_slider.width(),
}))
w.workspace.undo_stack.setClean()
w.session.mark_clean()
w.shutdown()
'''


def probe(tmp_path: Path, screen: tuple[int, int], scale: int) -> dict:
    config = tmp_path / "screen.json"
    config.write_text(json.dumps({"synchronousWindowSystemEvents": False,
                                  "windowFrameMargins": False,
                                  "screens": [{"name": "s", "x": 0, "y": 0, "width": screen[0],
                                               "height": screen[1], "logicalDpi": 96,
                                               "logicalBaseDpi": 96, "dpr": 1}]}))
    env = {**os.environ, "QT_QPA_PLATFORM": f"offscreen:configfile={config}",
           "QT_SCALE_FACTOR": str(scale), "PYTHONPATH": str(ROOT), "MAL_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(Path(__file__).parent),
                          str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("screen,scale", [((1280, 720), 1), ((2560, 1440), 2)],
                         ids=["1280x720", "2x-scale"])
def test_first_window_fits_the_screen_and_plots_keep_their_minimum(tmp_path: Path, screen,
                                                                   scale: int) -> None:
    m = probe(tmp_path, screen, scale)
    assert m["dpr"] == scale and m["area"] == [1280, 720]  # 1280 x 720 logical either way
    x, y, width, height = m["window"]
    assert x >= 0 and y >= 0 and x + width <= 1280 and y + height <= 720, m["window"]
    assert m["min_hint"][0] <= 1280 and m["min_hint"][1] <= 720 - 40, m["min_hint"]
    assert m["bar_visible"] and m["bar_bottom"] <= m["area_bottom"]  # status bar on screen
    assert {p[0] for p in m["plots"]} == {"curve", "diagnostics", "evaluate"}
    for name, w, h, min_w, min_h in m["plots"]:  # never clipped or squeezed below usable
        assert w >= min_w - 1 and h >= min_h - 1, (name, w, h)
    assert m["list_rows"] >= 3.5, m["list_rows"]  # the plan list shows its steps
    assert m["slider"] >= 120
