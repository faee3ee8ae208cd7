"""Run a probe script in a fresh Qt process on a simulated screen and read what it measured.

Qt fixes the screen geometry and scale at start-up, so each screen size or QT_SCALE_FACTOR
needs its own process: the offscreen platform takes the screen from a JSON config file. The
probe prints one JSON line last; that line is returned as a dict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_on_screen(probe: str, args: list[str], tmp: Path, screen: tuple[int, int],
                  scale: float = 1) -> dict:
    """Run ``probe`` (Python source) with ``args`` on a ``screen`` (width, height) at scale
    ``scale``; its files go to ``tmp``."""
    config = tmp / "screen.json"
    config.write_text(json.dumps({"synchronousWindowSystemEvents": False,
                                  "windowFrameMargins": False,
                                  "screens": [{"name": "s", "x": 0, "y": 0, "width": screen[0],
                                               "height": screen[1], "logicalDpi": 96,
                                               "logicalBaseDpi": 96, "dpr": 1}]}))
    env = {**os.environ, "QT_QPA_PLATFORM": f"offscreen:configfile={config}",
           "QT_SCALE_FACTOR": str(scale), "PYTHONPATH": str(ROOT), "MAL_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True,
                         text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
