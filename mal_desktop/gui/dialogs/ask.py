"""Questions the main window asks before losing work. Tests replace these functions."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

SAVE, DISCARD, CANCEL = "save", "discard", "cancel"
RESTORE, LATER = "restore", "later"


def unsaved_changes(parent: QWidget | None, name: str) -> str:
    """Ask what to do with unsaved changes of project ``name``: SAVE, DISCARD or CANCEL."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Unsaved changes")
    box.setText(f"Save the changes to {name}?")
    box.setInformativeText("Your changes will be lost if you don't save them.")
    box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                           | QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    answer = box.exec()
    if answer == QMessageBox.StandardButton.Save:
        return SAVE
    if answer == QMessageBox.StandardButton.Discard:
        return DISCARD
    return CANCEL


def stop_running_job(parent: QWidget | None, job_name: str) -> bool:
    """Ask whether to cancel the running job ``job_name`` (to quit); True means cancel it."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("A job is running")
    box.setText(f"\u201c{job_name}\u201d is still running.")
    box.setInformativeText("Cancel it and quit?")
    stop = box.addButton("Cancel Job and Quit", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Keep Running", QMessageBox.ButtonRole.RejectRole)
    box.exec()
    return box.clickedButton() is stop


def offer_recovery(parent: QWidget | None, description: str) -> str:
    """Offer to restore autosaved work: RESTORE, DISCARD or LATER (keep the file, ask again)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Recover unsaved work")
    box.setText("MAL Desktop did not close normally last time.")
    box.setInformativeText(f"Unsaved work was autosaved ({description}). Restore it?")
    restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Not Now", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(restore)
    box.exec()
    if box.clickedButton() is restore:
        return RESTORE
    if box.clickedButton() is discard:
        return DISCARD
    return LATER
