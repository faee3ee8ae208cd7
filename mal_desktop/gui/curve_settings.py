"""The toolbar's curve settings: the data set and the number of lambda values, kept in step
with the session (which stores them in the project and the settings)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtWidgets import QComboBox, QSpinBox

from .controllers.session import GRID_MAX, GRID_MIN, SessionController


class CurveSettings(QObject):
    """A data-set combo box and a grid spin box bound to ``session`` both ways.

    The user's choice goes to :meth:`SessionController.set_data` / ``set_grid``; a project
    opened by the session shows up in the widgets. Attributes: ``dataset_combo``, ``grid_spin``
    (the window places them in its toolbar).
    """

    def __init__(self, session: SessionController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._session = session
        self.dataset_combo = QComboBox()
        self.dataset_combo.setObjectName("datasetCombo")
        self.dataset_combo.setToolTip("Data set for the interpolation curve (test split)")
        self.dataset_combo.setMinimumContentsLength(12)
        self.dataset_combo.addItem(session.data, session.data)
        self.grid_spin = QSpinBox()
        self.grid_spin.setObjectName("gridSpin")
        self.grid_spin.setRange(GRID_MIN, GRID_MAX)
        self.grid_spin.setValue(session.grid)
        self.grid_spin.setSuffix(" points")
        self.grid_spin.setToolTip("Number of lambda values on the curve (0 to 1)")
        self.dataset_combo.currentIndexChanged.connect(self._on_dataset_chosen)
        self.grid_spin.valueChanged.connect(session.set_grid)
        session.dataChanged.connect(self.show_data)
        session.gridChanged.connect(self.grid_spin.setValue)

    def set_datasets(self, datasets: dict[str, str]) -> None:
        """Offer ``datasets`` (name -> description), keeping the current choice."""
        combo = self.dataset_combo
        current = combo.currentData() or self._session.data
        combo.blockSignals(True)
        combo.clear()
        for name, description in datasets.items():
            combo.addItem(name, name)
            combo.setItemData(combo.count() - 1, description, Qt.ItemDataRole.ToolTipRole)
        if combo.findData(current) < 0:
            combo.addItem(Path(current).name, current)
        combo.setCurrentIndex(combo.findData(current))
        combo.blockSignals(False)

    @Slot(str)
    def show_data(self, data: str) -> None:
        """Select ``data`` (added when it is a file not offered yet)."""
        combo = self.dataset_combo
        if combo.findData(data) < 0:
            combo.addItem(Path(data).name, data)
        combo.setCurrentIndex(combo.findData(data))

    @Slot(int)
    def _on_dataset_chosen(self, _index: int) -> None:
        data = self.dataset_combo.currentData()
        if data:
            self._session.set_data(str(data))
