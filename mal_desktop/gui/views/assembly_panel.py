"""AssemblyPanel: the list of assembly steps and an editor for the selected one.

The list is a QTreeView over :class:`QtPlanModel`. The editor edits lambda (slider and spin box
kept in sync), alignment, unmatched policy, merge method and the method's parameters (a form
built from the method's ``Param`` schema), and orders or removes steps. Every edit is pushed on
the workspace's undo stack as a command from gui/undo.py; a slider drag is one undo step.
The editor is refreshed from the plan's change events, so undo/redo updates it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGroupBox,
                               QHBoxLayout, QHeaderView, QLabel, QMenu, QScrollArea, QSizePolicy,
                               QSlider, QSplitter, QStyle, QToolButton, QVBoxLayout, QWidget)

from ...core.errors import MalError
from ...core.merge.methods import MERGE_METHODS
from ...core.merge.plan import ALIGN_MODES, UNMATCHED_POLICIES, AssemblyStep, PlanChange
from ...core.merge.case_words import explain_case
from ..models.plan_model import QtPlanModel, subscribe_weakly
from ..undo import MoveStepCommand, RemoveStepCommand, UpdateStepCommand, new_gesture
from ..workspace import Workspace
from .step_list import StepListView
from .wheel_guard import guard_wheel

SLIDER_STEPS = 1000  # slider resolution: lambda in steps of 0.001

ALIGN_TIPS = {
    "chain": "Align every hidden space of the prefix jointly (Git Re-Basin style); the layer "
             "then reads the features its predecessors produce. Falls back to local when the "
             "layer depths differ.",
    "local": "Align this layer alone: alternate LAPs for its output and input units.",
    "none": "No alignment: pair units by index (truncate or zero-pad). The naive baseline.",
}
UNMATCHED_TIPS = {
    "zero": "Base units with no zoo partner are merged with zeros: (1 - \u03bb) \u00b7 base "
            "(pure zero-padding).",
    "keep": "Base units with no zoo partner keep their base values.",
}


def _breakable(text: str) -> str:
    """``text`` with a zero-width space after each '.', ':' and '_': a wrapping label may then
    break a long layer path (it breaks only between words)."""
    for mark in ".:_":
        text = text.replace(mark, mark + "\u200b")
    return text


class AssemblyPanel(QWidget):
    """Step list + step editor over ``workspace.plan``; edits go through the undo stack.

    Signals: ``selectedLambdaChanged(float)`` - lambda of the selected step after any change
    (NaN when no step is selected), for the curve plot's lambda line.
    Slots: ``apply_lambda(float)`` - set the selected step's lambda (one undo command), e.g. from
    ``CurvePlot.lambdaDragged``.
    """

    selectedLambdaChanged = Signal(float)

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ws = workspace
        self._updating = False  # True while widgets are set from the plan (no commands then)
        self._gesture: int | None = None
        self._param_boxes: dict[str, QDoubleSpinBox] = {}
        self._param_method: str | None = None
        self.model = QtPlanModel(workspace, self)
        self._build()
        self._listener = subscribe_weakly(workspace.plan, self, "_on_plan_change")
        workspace.selectedStepChanged.connect(self._on_selected)
        workspace.modelsChanged.connect(self._refresh_editor)
        self._on_selected(workspace.selected_step)

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        """The panel: the step list with its actions above, the step editor below (a splitter
        lets the user trade list height for editor height)."""
        self._build_step_list()
        buttons = self._build_step_buttons()
        self._build_editor()
        # The editor scrolls when the panel is short: the step list keeps at least three of its
        # two-line rows (at 1280 x 720 it used to show one).
        self.editor_area = QScrollArea()
        self.editor_area.setWidget(self.editor)
        self.editor_area.setWidgetResizable(True)
        self.editor_area.setFrameShape(QFrame.Shape.NoFrame)
        self.editor_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.editor_area.setMinimumHeight(72)
        row = 2 * self.view.fontMetrics().height() + 2
        self.view.setMinimumHeight(self.view.header().sizeHint().height() + 3 * row
                                   + 2 * self.view.frameWidth())
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(self.editor_area)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.splitter, 1)

    # -- step list ---------------------------------------------------------------------------
    def _build_step_list(self) -> None:
        self.view = StepListView(self)
        self.view.setModel(self.model)
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for signal in (self.model.rowsInserted, self.model.rowsRemoved, self.model.modelReset,
                       self.model.dataChanged):
            signal.connect(self.view.fit_columns)
        self.view.selectionModel().currentRowChanged.connect(self._on_row_changed)
        self.view.menuRequested.connect(self._context_menu)

    def _step_action(self, text: str, icon: QStyle.StandardPixmap,
                     shortcut: QKeySequence | QKeySequence.StandardKey | str,
                     slot: Callable[[], None], tip: str) -> QAction:
        """An action of the step list (its shortcut named in the tooltip)."""
        a = QAction(self.style().standardIcon(icon), text, self)
        keys = QKeySequence(shortcut)
        a.setShortcut(keys)
        # Only while the step list has focus: Delete in a spin box must edit the number.
        a.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        a.setToolTip(f"{tip} ({keys.toString(QKeySequence.SequenceFormat.NativeText)})")
        a.triggered.connect(slot)
        self.view.addAction(a)
        return a

    def _build_step_buttons(self) -> QHBoxLayout:
        """Move up, move down and remove: actions of the list, and tool buttons above it."""
        self.up_action = self._step_action("Move Step Up", QStyle.StandardPixmap.SP_ArrowUp,
                                           "Ctrl+Up", self.move_up, "Run the selected step earlier")
        self.down_action = self._step_action("Move Step Down",
                                             QStyle.StandardPixmap.SP_ArrowDown, "Ctrl+Down",
                                             self.move_down, "Run the selected step later")
        self.remove_action = self._step_action("Remove Step", QStyle.StandardPixmap.SP_TrashIcon,
                                               QKeySequence.StandardKey.Delete,
                                               self.remove_selected, "Remove the selected step")
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(QLabel("<b>Assembly steps</b>"))
        buttons.addStretch(1)
        for a in (self.up_action, self.down_action, self.remove_action):
            b = QToolButton(self)
            b.setDefaultAction(a)
            b.setAutoRaise(True)
            buttons.addWidget(b)
        return buttons

    # -- step editor -------------------------------------------------------------------------
    def _build_editor(self) -> None:
        """The "Selected step" form: lambda, alignment, merge method and width case."""
        self.editor = QGroupBox("Selected step")
        form = QFormLayout(self.editor)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        # A narrow dock puts a field under its label instead of squeezing both.
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        # The step's layers in a wrapping label, not the group's title: a title is never
        # shortened, so a language model's long layer path set the whole editor's minimum width
        # and the dock cut off its slider and combo boxes.
        self.route_label = QLabel()
        self.route_label.setObjectName("routeLabel")
        self.route_label.setWordWrap(True)  # (not selectable: a copy would hold the breaks)
        self.route_label.setMinimumWidth(60)
        form.addRow(self.route_label)
        self._build_lambda_row(form)
        self._build_alignment_rows(form)
        self._build_method_rows(form)
        self._build_case_row(form)
        # the form scrolls: a wheel turned to scroll it must not edit the step under the pointer
        guard_wheel(self, self.lam_slider, self.lam_spin, self.align_combo,
                    self.unmatched_combo, self.method_combo)

    def _build_lambda_row(self, form: QFormLayout) -> None:
        """A slider and a spin box for lambda, kept in sync (a slider drag is one undo step)."""
        self.lam_slider = QSlider(Qt.Orientation.Horizontal)
        self.lam_slider.setRange(0, SLIDER_STEPS)
        self.lam_slider.setPageStep(SLIDER_STEPS // 20)
        self.lam_slider.setSingleStep(SLIDER_STEPS // 100)
        self.lam_slider.setMinimumWidth(120)  # a usable drag range whatever the dock width
        self.lam_slider.setToolTip("Merging factor \u03bb: 0 keeps the base layer, 1 replaces it "
                                   "by the aligned zoo layer. A drag is one undo step.")
        self.lam_spin = QDoubleSpinBox()
        self.lam_spin.setRange(0.0, 1.0)
        self.lam_spin.setDecimals(3)
        self.lam_spin.setSingleStep(0.01)
        self.lam_spin.setKeyboardTracking(False)  # one command per committed value, not per key
        self.lam_spin.setToolTip(self.lam_slider.toolTip())
        self.lam_slider.sliderPressed.connect(self._begin_drag)
        self.lam_slider.sliderReleased.connect(self._end_drag)
        self.lam_slider.valueChanged.connect(self._on_slider)
        self.lam_spin.valueChanged.connect(self._on_spin)
        lam_row = QHBoxLayout()
        lam_row.addWidget(self.lam_slider, 1)
        lam_row.addWidget(self.lam_spin)
        form.addRow("\u03bb (merging factor)", lam_row)

    def _build_alignment_rows(self, form: QFormLayout) -> None:
        """How units are matched (alignment mode) and what unmatched base units get."""
        self.align_combo = QComboBox()
        for i, mode in enumerate(ALIGN_MODES):
            self.align_combo.addItem(mode, mode)
            self.align_combo.setItemData(i, ALIGN_TIPS.get(mode, mode), Qt.ItemDataRole.ToolTipRole)
        self.align_combo.setToolTip("How zoo units are matched to base units before merging")
        self.align_combo.activated.connect(
            lambda _i: self._edit({"align": self.align_combo.currentData()}))
        form.addRow("Alignment", self.align_combo)

        self.unmatched_combo = QComboBox()
        for i, policy in enumerate(UNMATCHED_POLICIES):
            self.unmatched_combo.addItem(policy, policy)
            self.unmatched_combo.setItemData(i, UNMATCHED_TIPS.get(policy, policy),
                                             Qt.ItemDataRole.ToolTipRole)
        self.unmatched_combo.setToolTip("What happens to base units that get no zoo partner "
                                        "(when the base side is wider)")
        self.unmatched_combo.activated.connect(
            lambda _i: self._edit({"unmatched": self.unmatched_combo.currentData()}))
        form.addRow("Unmatched base units", self.unmatched_combo)

    def _build_method_rows(self, form: QFormLayout) -> None:
        """The merge method and the form of its parameters (filled by ``_build_params``)."""
        self.method_combo = QComboBox()
        for i, (name, method) in enumerate(MERGE_METHODS.items()):
            self.method_combo.addItem(method.label, name)
            self.method_combo.setItemData(i, method.description, Qt.ItemDataRole.ToolTipRole)
        self.method_combo.activated.connect(self._on_method)
        form.addRow("Merge method", self.method_combo)
        self.params_box = QWidget()
        self.params_form = QFormLayout(self.params_box)
        self.params_form.setContentsMargins(0, 0, 0, 0)
        self.params_label = QLabel("Parameters")
        form.addRow(self.params_label, self.params_box)

    def _build_case_row(self, form: QFormLayout) -> None:
        """The step's width case (or why it does not fit), selectable for copying."""
        self.case_label = QLabel()
        self.case_label.setObjectName("caseLabel")
        self.case_label.setWordWrap(True)
        self.case_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Preferred, not Ignored: an ignored width gave the form a one-line height and the
        # "in:" line was cut off at the default dock width.
        self.case_label.setSizePolicy(QSizePolicy.Policy.Preferred,
                                      QSizePolicy.Policy.MinimumExpanding)
        self.case_label.setMinimumWidth(60)
        form.addRow("Width case", self.case_label)

    # -- selection -------------------------------------------------------------------------
    @Slot(int)
    def _on_selected(self, index: int) -> None:
        sel = self.view.selectionModel()
        if index < 0:
            sel.clearSelection()
            sel.setCurrentIndex(QModelIndex(), QItemSelectionModel.SelectionFlag.NoUpdate)
        elif sel.currentIndex().row() != index or not sel.hasSelection():
            sel.setCurrentIndex(self.model.index(index, 0),
                                QItemSelectionModel.SelectionFlag.ClearAndSelect
                                | QItemSelectionModel.SelectionFlag.Rows)
            self.view.scrollTo(self.model.index(index, 0))
        self._refresh_editor()

    @Slot(QModelIndex, QModelIndex)
    def _on_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._ws.select_step(current.row() if current.isValid() else -1)

    @Slot(QModelIndex, QPoint)
    def _context_menu(self, index: QModelIndex, where: QPoint) -> None:
        if not index.isValid():
            return
        self._ws.select_step(index.row())
        menu = QMenu(self)
        menu.addActions([self.up_action, self.down_action])
        menu.addSeparator()
        menu.addAction(self.remove_action)
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.popup(where)  # not exec(): no nested event loop

    def _selected(self) -> tuple[int, AssemblyStep] | None:
        i = self._ws.selected_step
        if 0 <= i < len(self._ws.plan.steps):
            return i, self._ws.plan.steps[i]
        return None

    # -- plan events -----------------------------------------------------------------------
    def _on_plan_change(self, change: PlanChange) -> None:
        # Selection-changing events reach us through selectedStepChanged; an update of the
        # selected step (an edit, its undo) only through here.
        if change.kind in ("update", "models") or change.index == self._ws.selected_step:
            self._refresh_editor()
        else:
            self._update_actions()

    @Slot()
    def _refresh_editor(self) -> None:
        sel = self._selected()
        self._update_actions()
        self.editor.setEnabled(sel is not None)
        self._updating = True
        try:
            if sel is None:
                self.editor.setTitle("Selected step")
                self.route_label.setText("")
                self.route_label.hide()
                self.case_label.setText("Select a step to edit it.")
                self._build_params(None, ())
                self.selectedLambdaChanged.emit(math.nan)
                return
            i, step = sel
            self.editor.setTitle(f"Step {i + 1}")
            route = f"{step.source}:{step.source_layer} \u2192 {step.base_layer}"
            self.route_label.setText(_breakable(route))
            self.route_label.setToolTip(route)
            self.route_label.show()
            if not self.lam_slider.isSliderDown():  # never fight the user's drag
                self.lam_slider.setValue(round(step.lam * SLIDER_STEPS))
            self.lam_spin.setValue(step.lam)
            self.align_combo.setCurrentIndex(self.align_combo.findData(step.align))
            self.unmatched_combo.setCurrentIndex(self.unmatched_combo.findData(step.unmatched))
            m = self.method_combo.findData(step.method)
            if m < 0:  # a plan from a newer version: show the name, do not lose it
                self.method_combo.addItem(step.method, step.method)
                m = self.method_combo.count() - 1
            self.method_combo.setCurrentIndex(m)
            # the chosen method explained where the user hovers (the items have theirs)
            known = MERGE_METHODS.get(step.method)
            about = "" if known is None else known.description if \
                known.description.startswith(known.label) else \
                f"{known.label}: {known.description}"
            self.method_combo.setToolTip("How the aligned zoo layer is combined with the base "
                                         "layer" + (f"\n{about}" if about else ""))
            self._build_params(step.method, step.params)
            check = self._ws.check_plan_step(step)
            # one side per line: the label wraps badly inside the narrow form
            sides = check.case_text.replace("; ", "\n")
            if check.units:  # "out 4" of a 128-row layer: its units are blocks of rows
                sides += "\n" + check.units.replace("; ", "\n")
            self.case_label.setText(sides if check.ok else f"\u26a0 {check.reason}"
                                    + (f"\n{sides}" if sides else ""))
            explained = explain_case(check.case_text)
            self.case_label.setToolTip(explained)
            self.case_label.setWhatsThis(explained)
            self.selectedLambdaChanged.emit(float(step.lam))
        finally:
            self._updating = False

    def _build_params(self, method: str | None, values: tuple) -> None:
        """(Re)build the parameter form from the method's Param schema; set current values."""
        spec = MERGE_METHODS.get(method) if method else None
        if method != self._param_method:
            while self.params_form.rowCount():
                self.params_form.removeRow(0)
            self._param_boxes.clear()
            self._param_method = method
            for p in spec.params if spec is not None else ():
                box = QDoubleSpinBox()
                box.setRange(p.minimum, p.maximum)
                box.setDecimals(3)
                box.setSingleStep(max((p.maximum - p.minimum) / 100.0, 0.001))
                box.setKeyboardTracking(False)
                box.setToolTip(f"{p.help} (default {p.default:g}, range {p.minimum:g} to "
                               f"{p.maximum:g})")
                box.valueChanged.connect(lambda v, name=p.name: self._on_param(name, v))
                guard_wheel(self, box)
                self._param_boxes[p.name] = box
                self.params_form.addRow(p.name, box)
        given = dict(values)
        for p in spec.params if spec is not None else ():
            self._param_boxes[p.name].setValue(float(given.get(p.name, p.default)))
        has = bool(self._param_boxes)
        self.params_box.setVisible(has)
        self.params_label.setVisible(has)

    def _update_actions(self) -> None:
        i = self._ws.selected_step
        n = len(self._ws.plan.steps)
        self.up_action.setEnabled(0 < i < n)
        self.down_action.setEnabled(0 <= i < n - 1)
        self.remove_action.setEnabled(0 <= i < n)

    # -- edits -----------------------------------------------------------------------------
    def _push(self, command) -> None:
        try:
            self._ws.push(command)
        except MalError as exc:  # defensive: widgets bound the values, the core validates
            from ..log import report_error

            report_error(str(exc), parent=self.window())

    def _edit(self, changes: dict, gesture: int | None = None) -> None:
        if self._updating:
            return
        sel = self._selected()
        if sel is None:
            return
        i, step = sel
        if all(getattr(step, k) == v for k, v in changes.items()):
            return  # nothing changes: no empty undo entries
        try:
            command = UpdateStepCommand(self._ws.plan, i, changes, gesture=gesture)
        except MalError as exc:
            from ..log import report_error

            report_error(str(exc), parent=self.window())
            return
        self._push(command)

    def _begin_drag(self) -> None:
        self._gesture = new_gesture()

    def _end_drag(self) -> None:
        self._gesture = None

    @Slot(int)
    def _on_slider(self, value: int) -> None:
        if self._updating:
            return
        lam = value / SLIDER_STEPS
        self._updating = True
        try:
            self.lam_spin.setValue(lam)  # keep the two in sync without a second command
        finally:
            self._updating = False
        self._edit({"lam": lam}, gesture=self._gesture)

    @Slot(float)
    def _on_spin(self, value: float) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self.lam_slider.setValue(round(value * SLIDER_STEPS))
        finally:
            self._updating = False
        self._edit({"lam": round(float(value), 6)})

    @Slot(float)
    def apply_lambda(self, lam: float) -> None:
        """Set the selected step's lambda (clamped to [0, 1]) as one undo command."""
        if math.isfinite(lam):
            self._edit({"lam": min(1.0, max(0.0, float(lam)))})

    def _on_method(self, _index: int) -> None:
        name = self.method_combo.currentData()
        sel = self._selected()
        if sel is None or name == sel[1].method:
            return
        # A new method starts from its own defaults: the old method's parameters mean nothing.
        self._edit({"method": name, "params": ()})

    def _on_param(self, name: str, value: float) -> None:
        sel = self._selected()
        if self._updating or sel is None:
            return
        params = dict(sel[1].params)
        params[name] = float(value)
        self._edit({"params": tuple(sorted(params.items()))})

    @Slot()
    def move_up(self) -> None:
        """Move the selected step one place earlier (undoable)."""
        i = self._ws.selected_step
        if 0 < i < len(self._ws.plan.steps):
            self._push(MoveStepCommand(self._ws.plan, i, i - 1))

    @Slot()
    def move_down(self) -> None:
        """Move the selected step one place later (undoable)."""
        i = self._ws.selected_step
        if 0 <= i < len(self._ws.plan.steps) - 1:
            self._push(MoveStepCommand(self._ws.plan, i, i + 1))

    @Slot()
    def remove_selected(self) -> None:
        """Remove the selected step (undoable)."""
        i = self._ws.selected_step
        if 0 <= i < len(self._ws.plan.steps):
            self._push(RemoveStepCommand(self._ws.plan, i))
