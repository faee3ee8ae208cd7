"""The welcome page of a first launch on a 1280 x 720 screen and at 2x scaling on 2560 x 1600
(QT_SCALE_FACTOR=2), each in a subprocess with the offscreen platform given that screen (as in
test_layout.py).

The page scrolls when the middle of the window is short (so the plots below get their room), but
its card was ~340 px tall in a ~250 px middle: "Open Project" had to be scrolled to. A first-time
user must see every start action without scrolling; the scroll area is the last resort for
smaller screens.
"""

from __future__ import annotations

import pytest
from screen_probe import run_on_screen

pytestmark = pytest.mark.gui

PROBE = r'''
import json, sys
from pathlib import Path
from PySide6.QtWidgets import QApplication, QScrollArea
from PySide6.QtCore import QPoint, QRect
app = QApplication([])
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.settings import Settings
from mal_desktop.gui.workspace import Workspace

settings = Settings(Path(sys.argv[1]) / "settings.ini")
settings.demo_offered = True
w = MainWindow(settings, Workspace())
w.show()
w.start_up()
def pump(n=60):
    for _ in range(n):
        app.processEvents()
pump()
page = w.welcome
scroll = page.findChild(QScrollArea)
vp = scroll.viewport()
def measure():
    shown = []
    for b in page.buttons:
        rect = QRect(b.mapTo(vp, QPoint(0, 0)), b.size())
        shown.append([b.text(), b.isVisible(), vp.rect().contains(rect),
                      [rect.x(), rect.y(), rect.width(), rect.height()],
                      [b.sizeHint().width(), b.sizeHint().height()]])
    return {"current": w.central.currentWidget() is page, "viewport": [vp.width(), vp.height()],
            "vbar": scroll.verticalScrollBar().isVisible(),
            "scrolled": scroll.verticalScrollBar().value(), "buttons": shown}
first = measure()
# Someone who has opened files before: the recent list must not push the actions out of view.
page.set_recent([f"/home/user/models/run-{i}/model-{i}.safetensors" for i in range(6)])
pump()
print(json.dumps({"first": first, "recent": measure()}))
w.workspace.undo_stack.setClean()
w.session.mark_clean()
w.shutdown()
'''

CASES = {"1280x720": ((1280, 720), 1), "2x-2560x1600": ((2560, 1600), 2)}


@pytest.fixture(scope="module", params=list(CASES))
def welcome(request, tmp_path_factory) -> tuple[str, dict]:
    """(case name, measurements of the welcome page at a first launch)."""
    screen, scale = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    return request.param, run_on_screen(PROBE, [str(tmp)], tmp, screen, scale)


def test_first_launch_shows_every_welcome_action_without_scrolling(welcome) -> None:
    case, m = welcome
    first = m["first"]
    assert first["current"], case  # no model open: the welcome page is what the user sees
    assert not first["vbar"], (case, first)
    texts = [b[0] for b in first["buttons"]]
    assert {"Open Demo Zoo", "Open Base Model", "Open Project"} <= set(texts), texts
    for text, visible, inside, rect, hint in first["buttons"]:
        assert visible and inside, (case, text, rect, first["viewport"])
        assert rect[2] >= hint[0] and rect[3] >= hint[1], (case, text, rect, hint)  # text whole


def test_recent_files_never_hide_the_actions(welcome) -> None:
    """With six recent files the page may scroll, but the actions stay in view at the top."""
    case, m = welcome
    recent = m["recent"]
    assert recent["scrolled"] == 0, case
    for text, visible, inside, rect, _hint in recent["buttons"]:
        assert visible and inside, (case, text, rect, recent["viewport"])
