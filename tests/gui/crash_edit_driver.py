"""Run as a separate process by test_crash_recovery.py: the real app edits a plan, then waits to
be killed. Prints "EDITED <monotonic time>" once the edit is made.

    python crash_edit_driver.py SETTINGS.ini BASE.safetensors DONOR.safetensors
"""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import QTimer

from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.gui.app import create_app
from mal_desktop.gui.main_window import MainWindow
from mal_desktop.gui.settings import Settings


def main() -> None:
    ini, base, donor = sys.argv[1:4]
    app = create_app()
    settings = Settings(ini)
    settings.demo_offered = True
    window = MainWindow(settings)
    window.show()
    window.start_up([base, donor])

    def edit_when_loaded() -> None:
        ws = window.workspace
        if ws is None or ws.base is None or not ws.zoo or window.jobs.runner.is_running():
            QTimer.singleShot(50, edit_when_loaded)
            return
        donor_name = next(iter(ws.zoo))
        added = ws.add_step(AssemblyStep(donor_name, "layers.1", "layers.1", 0.35))
        assert added.check.ok, added
        print(f"EDITED {time.monotonic()}", flush=True)

    QTimer.singleShot(0, edit_when_loaded)
    app.exec()  # until killed


if __name__ == "__main__":
    main()
