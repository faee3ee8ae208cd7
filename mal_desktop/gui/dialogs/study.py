"""The Run MAL Study dialog and the message shown when the study is done.

:class:`StudyDialog` asks where the study writes its report and whether to run the quick
version; the window then runs :func:`~mal_desktop.gui.tasks.study_task` in the worker. When it
finishes, :func:`show_study_report` draws the figures (pyqtgraph, so in the GUI thread) and
links the report.
"""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QMessageBox, QPushButton,
                               QVBoxLayout, QWidget)


class StudyDialog(QDialog):
    """Asks where the MAL study writes its report and whether to run the quick version."""

    def __init__(self, parent: QWidget | None, folder: Path) -> None:
        super().__init__(parent)
        self.setWindowTitle("Run MAL Study")
        self.folder = QLineEdit(str(folder))
        self.folder.setMinimumWidth(380)
        browse = QPushButton("Browse\u2026")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.small = QCheckBox("Quick run (tiny models trained in the output folder, ~1 minute)")
        note = QLabel("Measures each law of Model Assembly Learning on the demo zoo (training "
                      "missing models first) and writes report.md, study.json and the figures. "
                      "The full study takes up to 10 minutes on 2 CPU cores; Cancel (Esc) stops "
                      "it.")
        note.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Output folder:", row)
        form.addRow("", self.small)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                               | QDialogButtonBox.StandardButton.Cancel)
        box.button(QDialogButtonBox.StandardButton.Ok).setText("Run Study")
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addLayout(form)
        layout.addWidget(box)

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Study Output Folder", self.folder.text())
        if chosen:
            self.folder.setText(chosen)

    def out_dir(self) -> Path:
        return Path(self.folder.text()).expanduser()

    def is_small(self) -> bool:
        return self.small.isChecked()


def show_study_report(parent: QWidget, result: Any) -> QMessageBox:
    """Draw the study's figures (GUI thread: pyqtgraph), then say where the report is.

    ``result`` is the core StudyResult. The message box is not modal-blocking (``open``), has a
    link to report.md and lists each law's verdict. Returns the box.
    """
    from ...core.errors import MalError

    problem = ""
    QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        from ...figures import render_figures

        figures = render_figures(result.data, result.out_dir)
    except (MalError, OSError) as exc:
        figures, problem = {}, str(exc)
    finally:
        QGuiApplication.restoreOverrideCursor()
    report = Path(result.report_path)
    link = QUrl.fromLocalFile(str(report)).toString()
    laws = "".join(f"<li>law {law['law']}: <b>{html.escape(str(law['verdict']))}</b> \u2014 "
                   f"{html.escape(str(law['title']))}</li>" for law in result.data.get("laws", []))
    seconds = result.data.get("timing", {}).get("total_seconds")
    text = (f"<p>The study is written to <a href='{link}'>{html.escape(str(report))}</a>"
            f" with {len(figures)} figure{'s' if len(figures) != 1 else ''}"
            + (f" ({seconds:.0f} s)" if isinstance(seconds, (int, float)) else "") + ".</p>"
            + (f"<ul>{laws}</ul>" if laws else "")
            + ("<p><i>A quick run: two seeds per configuration are too few for most tests to "
               "reach p &lt; 0.05, so 'not resolved' here says little; the report names those "
               "checks. The full study decides them.</i></p>" if result.data.get("small") else "")
            + (f"<p>Figures could not be drawn: {html.escape(problem)}</p>" if problem else ""))
    box = QMessageBox(QMessageBox.Icon.Information, "MAL Study Finished", text,
                      QMessageBox.StandardButton.Ok, parent)
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setObjectName("studyMessage")
    open_button = box.addButton("Open Report", QMessageBox.ButtonRole.ActionRole)
    open_button.clicked.connect(partial(QDesktopServices.openUrl, QUrl.fromLocalFile(str(report))))
    label = box.findChild(QLabel, "qt_msgbox_label")
    if label is not None:
        label.setOpenExternalLinks(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


__all__ = ["StudyDialog", "show_study_report"]
