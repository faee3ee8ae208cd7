"""The one error message box: a readable message, technical details collapsed."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget


def show_error(parent: QWidget | None, message: str, details: str = "",
               title: str = "MAL Desktop") -> QMessageBox:
    """Show ``message`` in a window-modal, non-blocking message box; returns the box.

    Parameters: parent - owning window (None: application-modal); message - one readable line
    (shown as plain text, never interpreted as HTML); details - traceback or technical text,
    behind the "Show Details..." button; title - the box's window title.
    """
    from ..log import log_file  # late: log.py imports this module lazily too

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle(title)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setText(message)
    log = log_file()
    if log is not None:
        box.setInformativeText(f"The log file has the full record:\n{log}")
    if details:
        box.setDetailedText(details)  # collapsed until the user asks for it
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setObjectName("errorBox")
    box.open()  # not exec(): the app keeps running (and tests do not block)
    return box
