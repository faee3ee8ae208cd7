"""The Evaluate panel's choice column: the models (rows) and data sets (columns) to evaluate.

Models come from the workspace: the base, the zoo models and, while the plan has steps, the
merged model of the current plan (only models on disk can be evaluated: a worker reads them by
file). Data sets are the registered ones and the user's own (a .npz file, a .txt file or a
folder of them, added here or brought by a project), and follow the session's data set until
the user ticks some here. Ticks are remembered by key, so a refill (a model added, a step
removed) keeps them. The window's Evaluate, Cancel and study actions sit below the lists.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt, Slot
from PySide6.QtGui import QAction, QPainter, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QFileDialog, QHBoxLayout,
                               QLabel, QListWidget, QListWidgetItem, QMenu, QSizePolicy, QStyle,
                               QStyledItemDelegate, QStyleOptionViewItem, QToolButton,
                               QVBoxLayout, QWidget)

from ...core.dataspec import TEXT_PREFIX, is_file_spec, spec_label
from ...core.project.merged import missing_model_files
from .. import tasks
from ..workspace import Workspace

KEY_ROLE = Qt.ItemDataRole.UserRole + 1  # list items: the choice key (ref text / dataset name)
NAME_ROLE = Qt.ItemDataRole.UserRole + 2  # list items: the row's display name


class CheckListDelegate(QStyledItemDelegate):
    """Outlines the check boxes of a list on a dark palette: Fusion draws their frame in a
    darkened window colour, which all but vanishes on a dark base (an unticked box would not
    show at all)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex) -> None:
        super().paint(painter, option, index)
        if index.data(Qt.ItemDataRole.CheckStateRole) is None or \
                option.palette.color(QPalette.ColorRole.Base).lightness() >= 128:
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        box = style.subElementRect(QStyle.SubElement.SE_ItemViewItemCheckIndicator, opt, widget)
        painter.save()
        painter.setPen(QPen(option.palette.color(QPalette.ColorRole.PlaceholderText), 1))
        painter.drawRect(box.adjusted(0, 0, -1, -1))
        painter.restore()


def _check_list(tip: str) -> QListWidget:
    w = QListWidget()
    w.setItemDelegate(CheckListDelegate(w))
    w.setToolTip(tip)
    w.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    w.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    # Three rows at least (it scrolls): the list's own minimum, with two of them and the
    # buttons, made the bottom docks too tall for a 1280 x 720 screen.
    w.setMinimumHeight(3 * w.fontMetrics().height() + 2 * w.frameWidth() + 6)
    return w


class EvaluateChoices(QWidget):
    """The two check lists (models, data sets), the Add data button and the actions' buttons.

    Parameters: workspace - the session (its models and plan); actions - the window's
    Evaluate, Cancel and study actions, shown as buttons below the lists.
    """

    def __init__(self, workspace: Workspace, actions: list[QAction],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ws = workspace
        self._checked: dict[str, bool] = {}
        self._datasets_chosen = False  # the user ticked data sets here (see follow_data)
        self._registered: dict[str, str] = {}  # registered data sets: name -> description
        self._own_data: list[str] = []  # the user's data sets (.npz, text:PATH), in order added
        self.models_list = _check_list("Models to evaluate (rows of the matrix)")
        self.models_list.setObjectName("evalModels")
        self.datasets_list = _check_list("Data sets to evaluate on, test split (columns)")
        self.datasets_list.setObjectName("evalDatasets")
        self.datasets_list.itemChanged.connect(self._on_dataset_ticked)
        left = QVBoxLayout(self)
        left.setContentsMargins(4, 2, 2, 2)
        left.setSpacing(2)
        # your own data: a .npz (x, y) or text (a .txt file or a folder of them), as the CLI
        # takes them; the list offered registered names only
        self.add_data_button = QToolButton()
        self.add_data_button.setText("Add\u2026")
        self.add_data_button.setAutoRaise(True)
        self.add_data_button.setToolTip("Evaluate on your own data too: a .npz file (x, y), a "
                                        ".txt file or a folder of .txt files")
        self.add_data_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        add_menu = QMenu(self.add_data_button)
        add_menu.addAction("A data file (.npz, .txt)\u2026", self._ask_data_file)
        add_menu.addAction("A folder of text files\u2026", self._ask_text_folder)
        self.add_data_button.setMenu(add_menu)
        for label, widget, stretch in (("Models", self.models_list, 3),
                                       ("Data sets", self.datasets_list, 2)):
            title = QHBoxLayout()
            title.addWidget(QLabel(f"<b>{label}</b>"))
            title.addStretch(1)
            if widget is self.datasets_list:
                title.addWidget(self.add_data_button)
            left.addLayout(title)
            left.addWidget(widget, stretch)
        # Two to a line (evaluate and cancel, then the study): in one line the three buttons
        # made this column ~300 px wide, which left the cell details too narrow for one plot
        # when the panel shares the bottom with the curve (1280 x 720).
        for pair in (actions[i:i + 2] for i in range(0, len(actions), 2)):
            buttons = QHBoxLayout()
            buttons.setSpacing(2)
            for action in pair:
                button = QToolButton()
                button.setDefaultAction(action)
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
                button.setAutoRaise(True)
                buttons.addWidget(button)
            buttons.addStretch(1)
            left.addLayout(buttons)

    def _fill(self, widget: QListWidget, items: list[tuple[str, str, str, bool]]) -> None:
        """(key, label, tooltip, enabled) items; checks remembered by key (new: checked)."""
        widget.blockSignals(True)
        widget.clear()
        for key, label, tip, enabled in items:
            item = QListWidgetItem(label)
            item.setData(KEY_ROLE, key)
            item.setData(NAME_ROLE, label)
            item.setToolTip(tip)
            flags = Qt.ItemFlag.ItemIsUserCheckable
            if enabled:
                flags |= Qt.ItemFlag.ItemIsEnabled
            item.setFlags(flags)
            on = enabled and self._checked.get(key, True)
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            widget.addItem(item)
        widget.blockSignals(False)

    def _remember(self, widget: QListWidget) -> None:
        for i in range(widget.count()):
            item = widget.item(i)
            if item.flags() & Qt.ItemFlag.ItemIsEnabled:
                self._checked[item.data(KEY_ROLE)] = item.checkState() == Qt.CheckState.Checked

    @Slot()
    def refresh_choices(self) -> None:
        """Rebuild the model list from the workspace (base, zoo, merged when the plan has
        steps), keeping what the user ticked."""
        self._remember(self.models_list)
        ws = self._ws
        items: list[tuple[str, str, str, bool]] = []
        entries = ([(ws.base, f"{ws.base.name} (base)")] if ws.base is not None else []) + \
            [(e, e.name) for e in ws.zoo.values()]
        for entry, label in entries:
            path = entry.path_text
            tip = path or "only in memory: save the model to a file to evaluate it"
            items.append((path or f"memory:{entry.name}", label, tip, bool(path)))
        if ws.base is not None and ws.plan.steps:
            n = len(ws.plan.steps)
            tip = (f"The base with the plan's {n} step{'s' if n != 1 else ''} applied "
                   "(assembled only when its cells are not cached)")
            files = not missing_model_files(ws.plan)
            if not files:
                tip = ("The plan's models must be on disk (files or model folders) to "
                       "assemble and evaluate the merge")
            items.append((tasks.MERGED_REF, tasks.MERGED_NAME, tip, files))
        self._fill(self.models_list, items)

    def set_datasets(self, datasets: dict[str, str], checked: str = "digits") -> None:
        """Offer ``datasets`` (name -> description); only ``checked`` is ticked at first."""
        self._registered = dict(datasets)
        for name in datasets:
            self._checked.setdefault(f"data:{name}", name == checked)
        self._fill_datasets()

    def add_dataset(self, spec: str, ticked: bool = True) -> None:
        """Offer the user's data set ``spec`` (a .npz path or text:PATH) below the registered
        ones, ticked; it is read when evaluated (a bad file then names itself)."""
        if spec in self._registered or spec in self._own_data:
            return
        self._own_data.append(spec)
        self._checked[f"data:{spec}"] = ticked
        self._fill_datasets()

    def _fill_datasets(self) -> None:
        self._remember(self.datasets_list)
        items = [(f"data:{n}", n, d, True) for n, d in self._registered.items()]
        items += [(f"data:{spec}", spec_label(spec), spec, True) for spec in self._own_data]
        self._fill(self.datasets_list, items)

    def _ask_data_file(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Add a Data Set", "",
                                              "Data sets (*.npz *.txt);;All files (*)")
        if file:
            self.add_dataset(file if not file.lower().endswith(".txt") else TEXT_PREFIX + file)

    def _ask_text_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a Folder of Text Files")
        if folder:
            self.add_dataset(TEXT_PREFIX + folder)

    @Slot()
    def _on_dataset_ticked(self) -> None:
        self._datasets_chosen = True

    @Slot(str)
    def follow_data(self, name: str) -> None:
        """Tick data set ``name`` alone until the user ticks data sets here.

        The curves' data set is the one the open models were made for: opening the language
        demo zoo chooses a text one, where an image data set would give only error cells."""
        if is_file_spec(name):  # a project's own data: offered here too
            self.add_dataset(name, ticked=not self._datasets_chosen)
        widget = self.datasets_list
        keys = [widget.item(i).data(KEY_ROLE) for i in range(widget.count())]
        if self._datasets_chosen or f"data:{name}" not in keys:
            return
        widget.blockSignals(True)  # not the user's choice
        for i, key in enumerate(keys):
            on = key == f"data:{name}"
            widget.item(i).setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
        widget.blockSignals(False)
        self._remember(widget)

    def set_checked(self, keys: list[str]) -> None:
        """Tick exactly the models (reference texts) and datasets ("data:NAME") in ``keys``."""
        for widget in (self.models_list, self.datasets_list):
            for i in range(widget.count()):
                item = widget.item(i)
                on = item.data(KEY_ROLE) in keys and bool(item.flags() & Qt.ItemFlag.ItemIsEnabled)
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
        self._remember(self.models_list)
        self._remember(self.datasets_list)

    def _ticked(self, widget: QListWidget) -> list[tuple[str, str]]:
        return [(widget.item(i).data(KEY_ROLE), widget.item(i).data(NAME_ROLE))
                for i in range(widget.count())
                if widget.item(i).checkState() == Qt.CheckState.Checked]

    def selected_models(self) -> list[tuple[str, str]]:
        """(reference text, display name) of the ticked models, in list order."""
        return self._ticked(self.models_list)

    def selected_datasets(self) -> list[str]:
        return [key.removeprefix("data:") for key, _ in self._ticked(self.datasets_list)]
