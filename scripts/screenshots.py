"""Screenshots of the real window for docs/screenshots (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py
    xvfb-run -a -s "-screen 0 1280x720x24" .venv/bin/python scripts/screenshots.py --tag 1280
    QT_SCALE_FACTOR=2 xvfb-run -a -s "-screen 0 2560x1600x24" .venv/bin/python \\
        scripts/screenshots.py --tag 2x

Opens the demo zoo exactly as `mal-desktop --demo` does, adds a second step from a wider zoo
model, runs the selected step in the worker (real alignment, real curves on digits) and grabs
the whole screen: the trees with a drop hint, the assembly, the curves and the diagnostics, in
light and dark. The window keeps the size a first launch gives it on this screen (that is what
is checked), except without ``--tag``, where it fills the 1600 x 1000 screen. Without ``--tag``
it also evaluates every open model and the plan's merge on three data sets and grabs the
Evaluate panel with the merged model's cell drilled into, and a zoo CNN's layer tree. PNGs over
400 KB are re-saved with a colour palette (imagemagick) to keep the repository small.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
MAX_BYTES = 400_000


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


def save(app, w, name: str) -> Path:
    """Grab the screen the window is on (what a user sees, status bar included) to ``name``."""
    settle(app, 0.8)
    path = OUT / name
    screen = w.screen()
    screen.grabWindow(0).save(str(path))
    for colors in ("256", "48"):  # a palette; fewer colours, undithered, for 2x shots
        if path.stat().st_size <= MAX_BYTES or not shutil.which("convert"):
            break
        subprocess.run(["convert", str(path), "+dither", "-colors", colors, f"PNG8:{path}"],
                       check=True)
    print(f"{path.name}: {path.stat().st_size // 1024} KB")
    return path


def open_demo(app, w) -> None:
    from PySide6.QtCore import Qt

    from mal_desktop.core.merge.plan import AssemblyStep

    w.start_up(demo=True)
    wait(app, lambda: w.workspace is not None and w.workspace.base is not None
         and not w.jobs.is_busy())
    ws = w.workspace
    donors = list(ws.zoo)
    print("base", ws.base.name, "zoo", donors)
    # a second donor, of another width: base 64 wide, donor 128 wide (the LAP picks 64 units)
    wide = next(n for n in donors if "w128" in n)
    ws.add_step(AssemblyStep(wide, "layers.0", "layers.0", 0.4, "chain"))
    views = w.views
    views.zoo_tabs.setCurrentIndex(list(views.zoo_tabs.panes).index(wide))
    # the drop hint of a zoo layer hovering over a base layer
    donor = views.zoo_tabs.panes[wide].model
    mime = donor.mimeData([donor.index_of("layers.1")])
    pane = views.base_pane
    idx = pane.proxy_index("layers.1")
    ok = pane.proxy.canDropMimeData(mime, Qt.DropAction.CopyAction, -1, -1, idx)
    pane.view._set_target(idx, ok)
    w.runs.run()
    wait(app, lambda: not w.jobs.is_busy())


def shoot_evaluate(app, w, theme) -> None:
    """evaluate.png / evaluate_dark.png: the models x datasets matrix and one cell's details."""
    from PySide6.QtCore import Qt

    from mal_desktop.gui import tasks

    ws, views = w.workspace, w.views
    rotated = Path(ws.base.path_text).parent / "mlp-w64-s1-rot90.safetensors"
    if rotated.is_file() and rotated.stem not in ws.zoo:
        n = len(ws.zoo)  # a model trained on rotated digits: the matrix shows what it knows
        w.files.open_paths([str(rotated)])
        wait(app, lambda: len(ws.zoo) == n + 1 and not w.jobs.is_busy())
    panel = views.evaluate_panel
    panel.cache_dir = Path(tempfile.mkdtemp()) / "eval-cache"  # every cell computed now
    panel.set_checked([e.path_text for e in [ws.base, *ws.zoo.values()]] + [
        tasks.MERGED_REF, "data:digits", "data:digits-permuted", "data:digits-rot90"])
    # The whole bottom for the panel (lists, matrix and drill-down side by side).
    w.curve_dock.hide()
    w.evaluate_dock.raise_()
    w.resizeDocks([w.evaluate_dock], [int(w.height() * 0.55)], Qt.Orientation.Vertical)
    t0 = time.time()
    w.evaluation.evaluate()
    wait(app, lambda: not w.jobs.is_busy())
    print(f"evaluated in {time.time() - t0:.1f} s: {panel.summary.text()}")
    rows = [panel.model.row_name(r) for r in range(panel.model.rowCount())]
    panel.select_cell(rows.index(tasks.MERGED_NAME), 1)
    for name, file in (("light", "evaluate.png"), ("dark", "evaluate_dark.png")):
        theme.apply(name)
        save(app, w, file)


def main(argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    from mal_desktop.gui.main_window import MainWindow
    from mal_desktop.gui.settings import Settings
    from mal_desktop.gui.theme import ThemeController

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="", help="name suffix: main_<tag>_light.png ...; "
                        "also keeps the first-launch window size and skips the extra shots")
    args = parser.parse_args(argv)
    app = QApplication(sys.argv[:1])
    OUT.mkdir(parents=True, exist_ok=True)
    settings = Settings(Path(tempfile.mkdtemp()) / "settings.ini")
    settings.demo_offered = True
    theme = ThemeController(app, "light")
    w = MainWindow(settings, theme=theme)
    if not args.tag:
        area = w.screen().availableGeometry()
        w.setGeometry(area)
    w.show()
    print("screen", w.screen().size().toTuple(), "dpr", w.devicePixelRatioF(),
          "window", w.size().toTuple())
    open_demo(app, w)
    tag = f"_{args.tag}" if args.tag else ""
    for name in ("light", "dark"):
        theme.apply(name)
        save(app, w, f"main{tag}_{name}.png")
    if not args.tag:
        views = w.views
        views.base_pane.view._set_target(None, False)
        theme.apply("light")
        cnn = next(n for n in views.zoo_tabs.panes if "cnn" in n)
        views.zoo_tabs.setCurrentIndex(list(views.zoo_tabs.panes).index(cnn))
        settle(app)
        views.zoo_tabs.grab().save(str(OUT / "zoo_cnn_tree.png"))
        shoot_evaluate(app, w, theme)
    print("saved to", OUT)
    w.workspace.undo_stack.setClean()
    w.session.mark_clean()
    w.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
