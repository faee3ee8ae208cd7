"""Fields in a scrolling form that take the mouse wheel only once the user has chosen them.

A combo box, spin box or slider changes its value under a turning wheel whether or not it has
focus. In the step editor, which scrolls when the dock is short, a user scrolling down to the
merge method turned it from TIES into DARE without noticing. Guarded fields ignore the wheel
until they have focus (clicked or tabbed to), and the ignored wheel scrolls the form instead.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QWidget


class WheelOnlyWhenFocused(QObject):
    """Event filter: a guarded widget's wheel event scrolls the area around it unless the
    widget has focus."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget) \
                or watched.hasFocus():
            return False
        # Handed to the scroll area explicitly: Qt passes an ignored wheel event on to the
        # parents only when it came from the window system, not when it was sent.
        parent = watched.parentWidget()
        while parent is not None and not isinstance(parent, QAbstractScrollArea):
            parent = parent.parentWidget()
        if parent is not None:
            QApplication.sendEvent(parent.viewport(), event)
        else:
            event.ignore()
        return True


def guard_wheel(owner: QObject, *widgets: QWidget) -> None:
    """Make each of ``widgets`` take the wheel only while focused (one filter per ``owner``)."""
    guard = owner.findChild(WheelOnlyWhenFocused, "wheelGuard")
    if guard is None:
        guard = WheelOnlyWhenFocused(owner)
        guard.setObjectName("wheelGuard")
    for widget in widgets:
        # the default WheelFocus would hand focus to a field the wheel merely passes over
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        widget.installEventFilter(guard)
