"""Screenshots of the real window for docs/screenshots (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

Opens the demo zoo exactly as `mal-desktop --demo` does, adds steps from two zoo models, runs the
selected step in the worker (real alignment, real curves on digits) and grabs the window: the
trees with a drop hint, the assembly, the live curves and the diagnostics, in light and dark.
Then it evaluates every open model and the plan's merge on three data sets (Evaluate, Ctrl+E)
and grabs the Evaluate panel with the merged model's cell drilled into, in light and dark.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def wait(app, cond, timeout: float = 300.0) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise TimeoutError("the app did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def settle(app, seconds: float = 0.6) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def shoot_evaluate(app, w, theme) -> None:
    """evaluate.png / evaluate_dark.png: the models x datasets matrix and one cell's details."""
    from PySide6.QtCore import Qt

    from mal_desktop.gui import tasks

    ws = w.workspace
    rotated = Path(ws.base.path_text).parent / "mlp-w64-s1-rot90.safetensors"
    if rotated.is_file() and rotated.stem not in ws.zoo:
        n = len(ws.zoo)  # a model trained on rotated digits: the matrix shows what it knows
        w.open_paths([str(rotated)])
        wait(app, lambda: len(ws.zoo) == n + 1 and not w.runner.is_running())
    panel = w.evaluate_panel
    panel.cache_dir = Path(tempfile.mkdtemp()) / "eval-cache"  # every cell computed now
    panel.set_checked([e.path_text for e in [ws.base, *ws.zoo.values()]] + [
        tasks.MERGED_REF, "data:digits", "data:digits-permuted", "data:digits-rot90"])
    # The whole bottom for the panel (lists, matrix and drill-down side by side): the curve,
    # squeezed beside it, would only show clipped labels.
    w.curve_dock.hide()
    w.evaluate_dock.raise_()
    w.resizeDocks([w.evaluate_dock], [480], Qt.Orientation.Vertical)
    t0 = time.time()
    w.evaluate_models()
    wait(app, lambda: not w.runner.is_running())
    print(f"evaluated in {time.time() - t0:.1f} s: {panel.summary.text()}")
    rows = [panel.model.row_name(r) for r in range(panel.model.rowCount())]
    panel.select_cell(rows.index(tasks.MERGED_NAME), 1)
    for name, file in (("light", "evaluate.png"), ("dark", "evaluate_dark.png")):
        theme.apply(name)
        settle(app, 1.0)
        w.grab().save(str(OUT / file))


def main() -> int:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from mal_desktop.core.merge.plan import AssemblyStep
    from mal_desktop.gui.settings import Settings
    from mal_desktop.gui.theme import ThemeController
    from mal_desktop.gui.main_window import MainWindow
    from mal_desktop.gui.undo import AddStepCommand

    app = QApplication(sys.argv)
    OUT.mkdir(parents=True, exist_ok=True)
    settings = Settings(Path(tempfile.mkdtemp()) / "settings.ini")
    settings.demo_offered = True
    theme = ThemeController(app, "light")
    w = MainWindow(settings, theme=theme)
    w.resize(1560, 960)
    w.show()
    w.start_up(demo=True)
    wait(app, lambda: w.workspace is not None and w.workspace.base is not None
         and not w.runner.is_running())
    ws = w.workspace
    donors = list(ws.zoo)
    print("base", ws.base.name, "zoo", donors)
    # a second donor, of another width: base 64 wide, donor 128 wide (the LAP picks 64 units)
    wide = next(n for n in donors if "w128" in n)
    ws.push(AddStepCommand(ws.plan, AssemblyStep(wide, "layers.0", "layers.0", 0.4, "chain")))
    ws.select_step(len(ws.plan.steps) - 1)
    w.zoo_tabs.setCurrentIndex(list(w.zoo_tabs.panes).index(wide))
    # show the drop hint of a zoo layer hovering over a base layer
    donor = w.zoo_tabs.panes[wide].model
    mime = donor.mimeData([donor.index_of("layers.1")])
    pane = w.base_pane
    idx = pane.proxy_index("layers.1")
    ok = pane.proxy.canDropMimeData(mime, Qt.DropAction.CopyAction, -1, -1, idx)
    pane.view._set_target(idx, ok)
    w.run()
    wait(app, lambda: not w.runner.is_running())
    settle(app)
    for name in ("light", "dark"):
        theme.apply(name)
        settle(app)
        w.grab().save(str(OUT / f"main_{name}.png"))
    pane.view._set_target(None, False)
    w.zoo_tabs.setCurrentIndex(list(w.zoo_tabs.panes).index(next(n for n in donors if "cnn" in n)))
    settle(app)
    w.zoo_tabs.grab().save(str(OUT / "zoo_cnn_tree.png"))
    shoot_evaluate(app, w, theme)
    print("saved to", OUT)
    ws.undo_stack.setClean()
    w.mark_clean()
    w.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
