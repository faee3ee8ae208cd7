"""Work around a reference-count bug in ``Signal.emit`` of some PySide6 releases.

PySide6-Essentials 6.12.0 (seen with CPython 3.11) returns ``True`` from
``SignalInstance.emit`` without taking a reference to it. Every emit from Python then lowers
the reference count of ``True`` by one, and after a few hundred to a few thousand emits the
interpreter aborts with "Fatal Python error: bool_dealloc". pyqtgraph and our job runner emit
signals all the time, so the app would crash within seconds of use.

:func:`apply` probes the installed PySide6 once: if an emit loses a reference, it wraps
``SignalInstance.emit`` to take the missing reference to the returned object and repays the
references the probe itself lost. A fixed PySide6 (or a Python with immortal booleans) passes
the probe and is left untouched. Prefer a PySide6 without the bug (pyproject excludes 6.12.0).
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal, SignalInstance

_applied = False


class _Probe(QObject):
    ping = Signal()


def _leaks_per_emit(rounds: int = 8) -> int:
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(rounds):
        probe.ping.emit()  # result discarded on purpose: that is where the reference is lost
    lost = before - sys.getrefcount(True)
    return lost


def apply() -> bool:
    """Patch ``SignalInstance.emit`` when the installed PySide6 needs it; True if patched."""
    global _applied
    if _applied:
        return True
    lost = _leaks_per_emit()
    if lost <= 0:
        return False
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None
    for _ in range(lost):  # repay what the probe took
        incref(True)
    original = SignalInstance.emit

    def emit(self: SignalInstance, *args: object) -> object:
        result = original(self, *args)
        if result is True or result is False:
            incref(result)  # the reference PySide6 forgot to take
        return result

    emit.__doc__ = original.__doc__
    SignalInstance.emit = emit  # type: ignore[method-assign]
    _applied = True
    return True
