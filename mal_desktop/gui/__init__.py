"""The PySide6 desktop application of mal_desktop.

Imports point one way: ``gui`` may import ``core``, never the reverse. Heavy modules (torch,
scipy, pyqtgraph) are imported after the main window shows, so the window appears fast.
"""

from ._pyside_fix import apply as _apply_pyside_fix

_apply_pyside_fix()  # before any widget or plot emits a signal (see _pyside_fix.py)
