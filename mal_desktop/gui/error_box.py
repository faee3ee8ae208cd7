"""The one error message box: a readable message, technical details collapsed.

A leaf module (Qt widgets only): gui/log.py, the one path errors take to the user, shows it.
It lives outside gui/dialogs because the dialogs log, and log.py must not import them back.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget


def show_error(parent: QWidget | None, message: str, details: str = "",
               title: str = "MAL Desktop", log_path: Path | None = None) -> QMessageBox:
    """Show ``message`` in a window-modal, non-blocking message box; returns the box.

    Parameters: parent - owning window (None: application-modal); message - one readable line
    (shown as plain text, never interpreted as HTML); details - traceback or technical text,
    behind the "Show Details..." button; title - the box's window title; log_path - the log
    file the box points to (None: not mentioned).
    """
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle(title)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setText(message)
    if log_path is not None:
        box.setInformativeText(f"The log file has the full record:\n{log_path}")
    if details:
        box.setDetailedText(details)  # collapsed until the user asks for it
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setObjectName("errorBox")
    box.open()  # not exec(): the app keeps running (and tests do not block)
    return box
