"""The toolbar's curve settings: the data set and the number of lambda values, kept in step
with the session (which stores them in the project and the settings)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtWidgets import QComboBox, QSpinBox

from ..core.dataspec import spec_label
from .controllers.session import GRID_MAX, GRID_MIN, SessionController

_DESCRIPTION = Qt.ItemDataRole.UserRole + 1  # an item's own tooltip, kept while it is greyed


class CurveSettings(QObject):
    """A data-set combo box and a grid spin box bound to ``session`` both ways.

    The user's choice goes to :meth:`SessionController.set_data` / ``set_grid``; a project
    opened by the session shows up in the widgets. Attributes: ``dataset_combo``, ``grid_spin``
    (the window places them in its toolbar).
    """

    def __init__(self, session: SessionController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._session = session
        self._base: tuple[str | None, bool | None] = (None, None)  # see fit_to
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
            combo.setItemData(combo.count() - 1, description, _DESCRIPTION)
        if combo.findData(current) < 0:
            self._add_spec(current)
        combo.setCurrentIndex(combo.findData(current))
        combo.blockSignals(False)
        self._mark_fitting()

    def fit_to(self, base_name: str | None, reads_tokens: bool | None) -> None:
        """Grey out the data sets the base cannot read (text for an image model, images for a
        language model), each saying why: 'digits' was offered for a language model and
        failed only once Run had assembled the plan. None: no base, everything offered."""
        self._base = (base_name, reads_tokens)
        self._mark_fitting()

    def _mark_fitting(self) -> None:
        from ..core.evaluate.datasets import is_text_dataset

        name, reads_tokens = self._base
        combo = self.dataset_combo
        items = combo.model()  # a combo box's own QStandardItemModel
        for i in range(combo.count()):
            data = str(combo.itemData(i))
            fits = reads_tokens is None or is_text_dataset(data) == reads_tokens
            item = items.item(i)
            item.setEnabled(fits)
            if not fits:
                why = ("reads token ids: choose a text data set" if reads_tokens else
                       "reads images or features: choose an image or feature data set")
                item.setToolTip(f"{name} {why}")
            elif item.data(_DESCRIPTION) is not None:
                item.setToolTip(item.data(_DESCRIPTION))

    def _add_spec(self, spec: str) -> None:
        """Offer a data set given by a path (a project's, or one chosen before), named by
        :func:`~mal_desktop.core.dataspec.spec_label`, the whole spec as its tooltip."""
        combo = self.dataset_combo
        combo.addItem(spec_label(spec), spec)
        for role in (Qt.ItemDataRole.ToolTipRole, _DESCRIPTION):
            combo.setItemData(combo.count() - 1, spec, role)

    @Slot(str)
    def show_data(self, data: str) -> None:
        """Select ``data`` (added when it is a file not offered yet)."""
        combo = self.dataset_combo
        if combo.findData(data) < 0:
            self._add_spec(data)
            self._mark_fitting()
        combo.setCurrentIndex(combo.findData(data))

    @Slot(int)
    def _on_dataset_chosen(self, _index: int) -> None:
        data = self.dataset_combo.currentData()
        if data:
            self._session.set_data(str(data))
