"""The demo-zoo dialog: offers the demo models (the digits demo zoo, or the language demo zoo)
and shows the build's progress.

The dialog does not run anything itself: it emits :attr:`DemoZooDialog.accepted_build` and the
main window starts the build in its JobRunner, then calls :meth:`DemoZooDialog.attach` so the
dialog follows that job (progress bar, message, Cancel) and closes when the job ends.
"""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QLayout,
                               QProgressBar, QPushButton, QVBoxLayout, QWidget)

from ...core.progress import ProgressEvent
from ..icons import app_icon
from ..workers import JobRunner

_OFFER = ("<h3>Try MAL Desktop with the demo zoo</h3>"
          "<p>The demo zoo is a handful of small models trained on the 8&times;8 handwritten "
          "digits that ship with scikit-learn: multi-layer perceptrons of different widths and "
          "seeds, one trained on pixel-permuted digits, and a small CNN.</p>"
          "<p>MAL Desktop opens an MLP as the base model and the others as the zoo, ready to "
          "drag layers from the zoo onto the base and run.</p>")
# after the digits offer: the first launch offers that one, and the other was hard to find
_LM_HINT = ("<p>Language models instead: File &#9656; Open Language Demo Zoo (small "
            "Llama-style models as Hugging Face folders), or <code>mal-desktop --demo "
            "language</code>.</p>")
_BUILD = ("<p>The models are trained once on this computer (about a minute or two) and cached "
          "in<br><code>{folder}</code>.</p>")
_READY = "<p>The demo zoo is already built in<br><code>{folder}</code>.</p>"
_LM_OFFER = ("<h3>Try MAL Desktop on language models</h3>"
             "<p>The language demo zoo is five small Llama-style causal language models "
             "(RMSNorm, rotary positions, SwiGLU, grouped-query attention) trained on text that "
             "ships with Python: the standard library's code and its docstrings. Widths 64, 128 "
             "and 192 on code, and a second seed at width 128 on code and on docstrings, all "
             "with one shared tokenizer.</p>"
             "<p>MAL Desktop opens the width-128 code model as the base and the others as the "
             "zoo, with the <code>python-code</code> test text chosen for curves: every next "
             "token is scored, and the loss is the logarithm of the perplexity.</p>")
_LM_BUILD = ("<p>The models are trained once on this computer (two to three minutes on two CPU "
             "cores) and cached in<br><code>{folder}</code>.</p>")
_LM_READY = "<p>The language demo zoo is already built in<br><code>{folder}</code>.</p>"
#: kind -> (title, offer, build, ready, tooltip of the open button)
_KINDS = {
    "digits": ("Demo Zoo", _OFFER, _BUILD, _READY,
               "Open an MLP as the base model and a few others as the zoo"),
    "language": ("Language Demo Zoo", _LM_OFFER, _LM_BUILD, _LM_READY,
                 "Open a language model as the base model and the others as the zoo"),
}


class DemoZooDialog(QDialog):
    """Offer (and follow the build of) the demo zoo.

    Parameters: parent; folder - where the zoo is (or will be) cached; ready - True when it is
    already built (the dialog then only offers to open it); kind - "digits" (the demo zoo) or
    "language" (the language demo zoo).
    Signals: ``accepted_build()`` - the user wants the demo (build if needed, then open).
    """

    accepted_build = Signal()

    def __init__(self, parent: QWidget | None, folder: Path, ready: bool,
                 kind: str = "digits") -> None:
        super().__init__(parent)
        title, offer, build, ready_text, open_tip = _KINDS[kind]
        self.kind = kind
        self.setObjectName("demoZooDialog")
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self._runner: JobRunner | None = None
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(64, 64))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self._text = QLabel(offer + (ready_text if ready else build).format(folder=folder)
                            + (_LM_HINT if kind == "digits" else ""))
        self._text.setWordWrap(True)
        self._text.setTextFormat(Qt.TextFormat.RichText)
        self._status = QLabel("")
        self._status.setWordWrap(True)
        self._status.hide()
        self._bar = QProgressBar()
        self._bar.setRange(0, 1000)
        self._bar.setTextVisible(True)
        self._bar.hide()
        self._buttons = QDialogButtonBox()
        self._go = QPushButton("Open Demo" if ready else "Build and Open")
        self._go.setDefault(True)
        self._go.setToolTip(open_tip)
        self._later = QPushButton("Not Now")
        self._cancel = QPushButton("Cancel")
        self._cancel.setToolTip("Stop building (models finished so far are kept) (Esc)")
        self._buttons.addButton(self._go, QDialogButtonBox.ButtonRole.AcceptRole)
        self._buttons.addButton(self._later, QDialogButtonBox.ButtonRole.RejectRole)
        self._buttons.addButton(self._cancel, QDialogButtonBox.ButtonRole.RejectRole)
        self._cancel.hide()  # after addButton, which shows it: only a running build cancels
        self._go.clicked.connect(self._on_go)
        self._later.clicked.connect(self.reject)
        self._cancel.clicked.connect(self._on_cancel)
        body = QVBoxLayout()
        body.addWidget(self._text)
        body.addWidget(self._status)
        body.addWidget(self._bar)
        top = QHBoxLayout()
        top.addWidget(icon)
        top.addSpacing(12)
        top.addLayout(body, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self._buttons)
        # A wrapped rich-text label gets its height from its width; a dialog sized before the
        # label knew its width cut the paragraph. A fixed text width gives the height up front.
        self._text.setFixedWidth(460)
        self._text.setMinimumHeight(self._text.heightForWidth(460))
        layout.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)

    @property
    def progress_bar(self) -> QProgressBar:
        return self._bar

    def attach(self, runner: JobRunner) -> None:
        """Follow the job just started in ``runner``; close when it ends."""
        self._runner = runner
        runner.progress.connect(self._on_progress)
        runner.finished.connect(self._on_end)
        runner.failed.connect(self._on_end)
        runner.cancelled.connect(self._on_end)
        self._go.hide()
        self._later.hide()
        self._cancel.show()
        self._status.setText("Starting\u2026")
        self._status.show()
        self._bar.setRange(0, 0)  # busy until the first fraction arrives
        self._bar.show()

    def _detach(self) -> None:
        if self._runner is not None:
            for signal, slot in ((self._runner.progress, self._on_progress),
                                 (self._runner.finished, self._on_end),
                                 (self._runner.failed, self._on_end),
                                 (self._runner.cancelled, self._on_end)):
                signal.disconnect(slot)
            self._runner = None

    @Slot()
    def _on_go(self) -> None:
        self._go.setEnabled(False)
        self.accepted_build.emit()

    @Slot()
    def _on_cancel(self) -> None:
        if self._runner is not None:
            self._cancel.setEnabled(False)
            self._status.setText("Cancelling\u2026")
            self._runner.cancel()
        else:
            self.reject()

    @Slot(object)
    def _on_progress(self, event: ProgressEvent) -> None:
        if event.message:
            self._status.setText(event.message)
        if math.isfinite(event.fraction):
            self._bar.setRange(0, 1000)
            self._bar.setValue(int(round(1000 * max(0.0, min(1.0, event.fraction)))))

    def _on_end(self, *_args: object) -> None:  # finished(result), failed(msg, details), ...
        self._detach()
        self.accept()

    def reject(self) -> None:  # Esc and the close button cancel a running build
        if self._runner is not None:
            self._on_cancel()
            return
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self._runner is not None:
            self._on_cancel()
            event.ignore()
            return
        super().closeEvent(event)
