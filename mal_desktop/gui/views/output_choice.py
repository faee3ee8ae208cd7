"""OutputChoice: which output of a model returning several is its logits, above its layer tree.

Shown only for such models (a ``.pt2`` program returning ``(logits, features)``, say). The first
output is used until the user picks one, and a note says so: a guess the user should see. A pick
goes through :meth:`Workspace.request_output` (the model is reloaded in the worker with that
output, then swapped in as one undoable command); the combo always shows what the loaded model
uses, so a failed or cancelled reload, an undo or a reopened project put it right.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QWidget

from ..workspace import ModelEntry, Workspace

_TIP = ("Which output of the model is its logits: curves and Evaluate score it, and merges keep "
        "it as the class output (the other outputs stay as they are). Undoable; saved in the "
        "project.")


def output_label(index: int, shape: tuple[int | None, ...] | None) -> str:
    """"output 1 \u00b7 (batch, 12)": an output and its shape, as the choice lists it."""
    if shape is None:
        return f"output {index}"
    sizes = ", ".join("?" if s is None else str(s) for s in shape)
    return f"output {index} \u00b7 (batch, {sizes})" if sizes else f"output {index} \u00b7 (batch,)"


class OutputChoice(QWidget):
    """"Logits: [output 0 \u00b7 (batch, 10) v]" plus a note while the choice is the default.

    Parameters: workspace; role - "base" or "zoo" (the model's role in the workspace).
    Hidden while its entry is None or returns one output. Attributes: ``combo``, ``note``.
    """

    def __init__(self, workspace: Workspace, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ws = workspace
        self._role = role
        self.entry: ModelEntry | None = None
        label = QLabel("&Logits:")
        self.combo = QComboBox()
        self.combo.setToolTip(_TIP)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        label.setBuddy(self.combo)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setEnabled(False)  # the palette's muted text, in light and dark themes
        self.note.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(label)
        layout.addWidget(self.combo)
        layout.addWidget(self.note, 1)
        # activated: the user's picks only, never the programmatic resets below
        self.combo.activated.connect(self._picked)
        self.setVisible(False)

    def set_entry(self, entry: ModelEntry | None) -> None:
        """Show ``entry``'s outputs and the one its loaded model uses (hidden for one output)."""
        self.entry = entry
        several = entry is not None and entry.outputs > 1
        self.setVisible(several)
        if not several:
            return
        assert entry is not None
        shapes = list(entry.output_shapes) + [None] * (entry.outputs - len(entry.output_shapes))
        labels = [output_label(i, shapes[i]) for i in range(entry.outputs)]
        self.combo.blockSignals(True)
        if [self.combo.itemText(i) for i in range(self.combo.count())] != labels:
            self.combo.clear()
            self.combo.addItems(labels)
        self.combo.setCurrentIndex(entry.output_index)
        self.combo.blockSignals(False)
        if entry.output_choice is None:
            self.note.setText(f"returns {entry.outputs} outputs; output {entry.output_index} is "
                              "used until you choose the logits")
        else:
            self.note.setText("")
        self.note.setToolTip(_TIP)

    @Slot(int)
    def _picked(self, index: int) -> None:
        if self.entry is not None:
            self._ws.request_output(self._role, self.entry.name, index)
