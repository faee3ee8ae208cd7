"""The About dialog: what the app is, versions, where its files are."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel,
                               QVBoxLayout, QWidget)

from ... import __version__
from ..icons import app_icon
from ..log import log_file

DESCRIPTION = ("Model Assembly Learning on the desktop: align layers of a zoo of trained models "
               "to a base model with generalized permutations, and merge them.")


def _version_of(package: str) -> str:
    module = sys.modules.get(package)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return metadata.version(package)  # no import: torch takes seconds to import
    except metadata.PackageNotFoundError:
        return "not installed"


class AboutDialog(QDialog):
    """Modal About box. Parameters: parent; device - the compute device label, if known;
    settings_file - where preferences are stored."""

    def __init__(self, parent: QWidget | None = None, device: str = "",
                 settings_file: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("About MAL Desktop")
        self.setObjectName("aboutDialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # freed by Qt, in the GUI thread
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(96, 96))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        title = QLabel(f"<h2 style='margin-bottom:0'>MAL Desktop</h2>"
                       f"<p style='margin-top:2px'>Version {__version__}</p>")
        text = QLabel(DESCRIPTION)
        text.setWordWrap(True)
        facts = QFormLayout()
        facts.addRow("Python:", QLabel(platform.python_version()))
        facts.addRow("Qt / PySide6:", QLabel(f"{qVersion()} / {pyside_version}"))
        facts.addRow("PyTorch:", QLabel(_version_of("torch")))
        facts.addRow("Compute device:", QLabel(device or "not started yet"))
        log = log_file()
        for label, value in (("Log file:", str(log) if log else "none"),
                             ("Settings:", settings_file or "default")):
            field = QLabel(value)
            field.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            field.setWordWrap(True)
            facts.addRow(label, field)
        right = QVBoxLayout()
        right.addWidget(title)
        right.addWidget(text)
        right.addSpacing(8)
        right.addLayout(facts)
        top = QHBoxLayout()
        top.addWidget(icon)
        top.addSpacing(12)
        top.addLayout(right, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(buttons)
        self.setMinimumWidth(480)
