"""Helpers for tests that create main windows."""

from __future__ import annotations

import shiboken6
from PySide6.QtWidgets import QWidget


def dispose(w: QWidget) -> None:
    """Close and destroy a window now, in the GUI thread.

    Windows sit in reference cycles (bound methods held by their children), so Python would
    free them only in a garbage collection - possibly triggered in the worker thread, and a
    QWidget destroyed there crashes Qt. Real windows live until the app exits.
    """
    if shiboken6.isValid(w):
        w.close()
        shiboken6.delete(w)
