"""Drag a zoo layer onto a base layer with REAL X input (xdotool) in the real window.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/real_drag_check.py

Needs xdotool and imagemagick's `import` (apt-get install -y xdotool imagemagick). Opens the
demo zoo like scripts/screenshots.py, then drives the pointer from a subprocess while the Qt
event loop runs (QDrag.exec runs its own loop, so the driver cannot live in this thread):
  1. mlp-w128-s0 "layers.1" onto base "layers.1" (fits): a step is added;
  2. cnn-w16-s0 "features.0.0" onto base "layers.0" (conv into linear, refused): no step, the
     status bar says why;
  3. Ctrl+Z on the keyboard removes the step of 1;
  4. the keyboard path: Alt+2 (zoo tree), arrow keys to "layers.0", the Menu key opens the
     context menu of exactly that row (Escape closes it), Alt+1 (base tree), arrow keys to
     "layers.0", Ctrl+Enter (Add Step) adds exactly that pair.
Each hover is grabbed from the X server to /tmp/real_drag_ok.png and /tmp/real_drag_refused.png
(row tint, tooltip and status bar). Prints PASS/FAIL lines; exits 1 on any FAIL.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from PySide6.QtCore import QPoint, QTimer
from PySide6.QtGui import QImage
from screenshots import settle, wait

from mal_desktop.gui.models.layer_tree_model import PATH_ROLE

FAILS: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILS.append(what)


def drive(app, script: str, timeout: float = 30.0) -> None:
    """Run a shell `script` of xdotool/import commands while the Qt event loop keeps going."""
    proc = subprocess.Popen(["sh", "-ec", script])
    wait(app, lambda: proc.poll() is not None, timeout)
    if proc.returncode:
        raise RuntimeError(f"driver failed ({proc.returncode}): {script}")
    settle(app, 0.3)


def row_center(pane, path: str):
    """Global (screen) coordinates of the middle of row ``path``'s name cell in ``pane``."""
    index = pane.proxy_index(path)
    assert index.isValid(), f"no row {path!r}"
    pane.view.scrollTo(index)
    rect = pane.view.visualRect(index)
    return pane.view.viewport().mapToGlobal(rect.center())


def real_drag(app, w, zoo: str, src: str, dst: str, shot: str) -> tuple[str, str, bool, str]:
    """Drag zoo row ``src`` onto base row ``dst`` with X input, grab the hover to ``shot``;
    returns what the hover showed: (status-bar text, tinted base row, tint is "fits", the
    colour of the target row's ends in the screenshot: "red", "green", "neither" or a mix)."""
    w.views.zoo_tabs.setCurrentIndex(list(w.views.zoo_tabs.panes).index(zoo))
    settle(app)
    a = row_center(w.views.zoo_tabs.panes[zoo], src)
    b = row_center(w.views.base_pane, dst)
    print(f"drag {zoo}:{src} at ({a.x()},{a.y()}) -> base {dst} at ({b.x()},{b.y()})")
    steps = 12  # well past QApplication.startDragDistance() (10 px) in small moves
    moves = "\n".join(
        f"xdotool mousemove {a.x() + (b.x() - a.x()) * i // steps} "
        f"{a.y() + (b.y() - a.y()) * i // steps}; sleep 0.04" for i in range(1, steps + 1))
    # The GUI thread (inside QDrag's own loop) reads the status bar and the tinted row when the
    # driver, hovering over the target, touches `mark`, just before it grabs the screen.
    mark = Path(tempfile.mkdtemp()) / "hovering"
    seen: list[tuple[str, str, bool]] = []

    def look() -> None:
        if mark.exists() and not seen:
            index, ok = w.views.base_pane.view.drop_target() or (None, False)
            row = str(index.data(PATH_ROLE)) if index is not None else ""
            seen.append((w.statusBar().currentMessage(), row, ok))

    poll = QTimer()
    poll.timeout.connect(look)
    poll.start(20)
    drive(app, f"""
xdotool mousemove --sync {a.x()} {a.y()}; sleep 0.2
xdotool mousedown 1; sleep 0.1
{moves}
xdotool mousemove {b.x() + 2} {b.y()}; sleep 0.25
xdotool mousemove {b.x()} {b.y()}; sleep 0.5
touch {mark}; sleep 0.1
import -window root {shot}
xdotool mouseup 1; sleep 0.2
""")
    poll.stop()
    viewport = w.views.base_pane.view.viewport()  # both ends of the row: not hidden by the drag pixmap
    tints = set()
    for x in (8, viewport.width() - 8):
        pixel = QImage(shot).pixelColor(viewport.mapToGlobal(QPoint(x, 0)).x(), b.y())
        r, g, b_ = pixel.red(), pixel.green(), pixel.blue()
        tints.add("red" if r > max(g, b_) + 15 else "green" if g > max(r, b_) + 10 else "neither")
    return (*(seen[0] if seen else ("", "", False)), "/".join(sorted(tints)))


def key_to_row(app, view, path: str) -> bool:
    """Press Home, then Down until the current row of ``view`` is ``path`` (real key events)."""
    drive(app, "xdotool key --clearmodifiers Home")
    for _ in range(12):
        if str(view.currentIndex().siblingAtColumn(0).data(PATH_ROLE)) == path:
            return True
        drive(app, "xdotool key --clearmodifiers Down")
    return False


def keyboard_path(app, w) -> None:
    """4. Select a zoo layer and a base layer with the keyboard, check the Menu key's menu,
    then Add Step (Ctrl+Enter): exactly that pair is added."""
    from PySide6.QtWidgets import QApplication, QMenu

    ws, views = w.workspace, w.views
    zoo_name = "mlp-w128-s0"
    views.zoo_tabs.setCurrentIndex(list(views.zoo_tabs.panes).index(zoo_name))
    w.activateWindow()
    settle(app)
    n0 = len(ws.plan.steps)
    zoo = views.zoo_tabs.current_pane()
    drive(app, "xdotool key --clearmodifiers alt+2")
    check(QApplication.focusWidget() is zoo.view, "Alt+2 puts the focus on the zoo tree")
    check(key_to_row(app, zoo.view, "layers.0"), "arrow keys reach zoo layers.0")
    drive(app, "xdotool key --clearmodifiers Menu; sleep 0.3")
    menu = QApplication.activePopupWidget()
    first = menu.actions()[0].text() if isinstance(menu, QMenu) else ""
    check(first == "layers.0", f"the Menu key's menu is for the selected row (got {first!r})")
    drive(app, "xdotool key Escape")
    drive(app, "xdotool key --clearmodifiers alt+1")
    base = views.base_pane
    check(QApplication.focusWidget() is base.view, "Alt+1 puts the focus on the base tree")
    check(key_to_row(app, base.view, "layers.0"), "arrow keys reach base layers.0")
    drive(app, "xdotool key --clearmodifiers ctrl+Return")
    new = ws.plan.steps[-1] if len(ws.plan.steps) == n0 + 1 else None
    check(new is not None and (new.source, new.source_layer, new.base_layer)
          == (zoo_name, "layers.0", "layers.0"), "Ctrl+Enter (Add Step) added exactly that pair")
    print("  status after Add Step:", w.statusBar().currentMessage())


def main() -> int:
    from PySide6.QtWidgets import QApplication

    from mal_desktop.gui.main_window import MainWindow
    from mal_desktop.gui.settings import Settings

    for tool in ("xdotool", "import"):
        if shutil.which(tool) is None:
            print(f"FAIL {tool} is not installed")
            return 1
    app = QApplication(sys.argv)
    settings = Settings(Path(tempfile.mkdtemp()) / "settings.ini")
    settings.demo_offered = True
    w = MainWindow(settings)
    w.resize(1560, 960)
    w.show()
    w.start_up(demo=True)
    wait(app, lambda: w.workspace is not None and w.workspace.base is not None
         and not w.jobs.is_busy())
    settle(app, 1.0)
    w.activateWindow()
    ws = w.workspace
    n0 = len(ws.plan.steps)
    print("base", ws.base.name, "zoo", list(ws.zoo), "steps", n0,
          "startDragDistance", QApplication.startDragDistance())

    # 1. a drop that fits
    assert ws.check("mlp-w128-s0", "layers.1", "layers.1").ok
    hint, row, ok, tint = real_drag(app, w, "mlp-w128-s0", "layers.1", "layers.1",
                                    "/tmp/real_drag_ok.png")
    print("  hover status:", hint)
    check(row == "layers.1" and ok and tint == "green",
          f"hover tints base row layers.1 green (got {row!r}, {ok}, on screen {tint})")
    check(hint.startswith("\u2713 mlp-w128-s0:layers.1 \u2192 layers.1"),
          "hover hint names the width case")
    new = ws.plan.steps[-1] if len(ws.plan.steps) == n0 + 1 else None
    check(new is not None and (new.source, new.source_layer, new.base_layer)
          == ("mlp-w128-s0", "layers.1", "layers.1"), "real drop added the step")
    print("  status after drop:", w.statusBar().currentMessage())

    # 2. a drop that is refused
    reason = ws.check("cnn-w16-s0", "features.0.0", "layers.0")
    assert not reason.ok
    hint, row, ok, tint = real_drag(app, w, "cnn-w16-s0", "features.0.0", "layers.0",
                                    "/tmp/real_drag_refused.png")
    print("  hover status:", hint)
    check(row == "layers.0" and not ok and tint == "red",
          f"hover tints base row layers.0 red (got {row!r}, {ok}, on screen {tint})")
    check(hint.startswith("\u2717 Cannot merge") and reason.reason in hint,
          "hover hint gives the reason")
    check(len(ws.plan.steps) == n0 + 1, "refused drop added no step")
    after = w.statusBar().currentMessage()
    print("  status after drop:", after)
    check(reason.reason in after, "status bar still shows the reason after the drop")

    # 3. Ctrl+Z on the real keyboard (focus on a tree, not a search box with its own undo)
    w.views.zoo_tabs.current_pane().view.setFocus()
    settle(app)
    drive(app, "xdotool key --clearmodifiers ctrl+z")
    check(len(ws.plan.steps) == n0, "Ctrl+Z removed the step")

    keyboard_path(app, w)

    ws.undo_stack.setClean()
    w.session.mark_clean()
    w.shutdown()
    print(f"{len(FAILS)} FAILED" if FAILS else "ALL PASSED")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
