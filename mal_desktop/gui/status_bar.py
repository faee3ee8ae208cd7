"""The window's status bar: messages, the running job's progress with its Cancel button, and
the compute device."""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QToolButton, QWidget

from ..core.progress import ProgressEvent


class JobStatusBar(QStatusBar):
    """Status bar with a progress bar and a Cancel button shown while a job runs.

    Parameters: cancel - the window's Cancel action (the button triggers it).
    Attributes: ``progress_bar``, ``cancel_button``, ``device_label``.
    """

    def __init__(self, cancel: QAction, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("jobProgress")
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setFixedWidth(200)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.hide()
        self.cancel_button = QToolButton()
        self.cancel_button.setDefaultAction(cancel)
        self.cancel_button.setAutoRaise(True)
        # Hidden widgets keep their space: a status bar that changes height while a job runs
        # re-lays out every dock, which froze the window for ~45 ms per progress update.
        for widget in (self.progress_bar, self.cancel_button):
            policy = widget.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            widget.setSizePolicy(policy)
        self.cancel_button.hide()
        self.device_label = QLabel("Device: \u2026")
        self.device_label.setObjectName("deviceLabel")
        self.device_label.setToolTip("Where alignment and evaluation compute (CUDA when "
                                     "available; MAL_DEVICE=cpu forces the CPU)")
        self.addPermanentWidget(self.progress_bar)
        self.addPermanentWidget(self.cancel_button)
        self.addPermanentWidget(self.device_label)

    def set_device(self, device: str) -> None:
        """Show where the engine computes ("CPU", "CUDA (...)")."""
        self.device_label.setText(f"Device: {device}")

    def set_busy(self, busy: bool, job_name: str = "") -> None:
        """Show (with the job's name) or hide the progress of a job."""
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if busy:
            self.progress_bar.setRange(0, 0)  # busy indicator until a fraction arrives
            self.showMessage(f"{job_name}\u2026")
        else:
            self.clearMessage()

    def show_progress(self, event: ProgressEvent) -> None:
        """Progress bar and message of the running job."""
        if event.fraction == event.fraction:  # not NaN
            value = int(round(1000 * max(0.0, min(1.0, event.fraction))))
            if self.progress_bar.maximum() != 1000:
                self.progress_bar.setRange(0, 1000)
            if value != self.progress_bar.value():
                self.progress_bar.setValue(value)
        if event.message:
            # The status bar's message area: drawn in place, no layout (unlike a QLabel).
            self.showMessage(event.message)
