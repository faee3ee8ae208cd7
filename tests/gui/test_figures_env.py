"""mal_desktop.figures configures Qt where it draws, not when it is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: this test session has long since created its QApplication.
SCRIPT = """
import os
os.environ.pop("QT_QPA_PLATFORM", None)
import mal_desktop.figures as figures
assert "QT_QPA_PLATFORM" not in os.environ, "importing figures changed the environment"
figures._app()  # no application yet: drawing must not need a display
from PySide6.QtGui import QGuiApplication
print(QGuiApplication.platformName())
"""


def test_import_leaves_the_environment_alone_and_drawing_needs_no_display() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY",
                                                             "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "offscreen"
