"""EvaluatePanel: choose models and datasets, see the models x datasets matrix, drill into a cell.

The user ticks models (the base, the zoo models and, when the plan has steps, the merged model of
the current plan) and datasets in the choice column (:mod:`.evaluate_choices`), then runs
Evaluate (an action of the window: Run > Evaluate Models, Ctrl+E). The window runs :func:`~mal_desktop.gui.tasks.eval_matrix_task` in the worker
and forwards each finished cell here (:meth:`EvaluatePanel.add_cell`), so the table fills as the
run goes; cached cells come back at once. Selecting a cell shows its per-class accuracy and
confusion matrix (:class:`~mal_desktop.gui.plots.cell_details.CellDetails`, which exports its
plots as figures and CSV, with the cell's provenance from here). The matrix exports as CSV and
JSON (atomic writes). The study, the window's other evaluation, has its dialog in
:mod:`mal_desktop.gui.dialogs.study`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QItemSelection, QModelIndex, QSize, Qt, Slot
from PySide6.QtGui import QAction, QPainter, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QMenu, QSizePolicy, QSplitter, QStyle,
                               QStyledItemDelegate, QStyleOptionViewItem, QToolButton,
                               QVBoxLayout, QWidget)

from ...core.evaluate.datasets import available_datasets, is_text_dataset
from ...core.toolkit.matrix import MatrixCell, MatrixResult
from ...core.evaluate.metric_registry import METRICS
from ...core.io.files import atomic_write_text
from ...core.jsonio import dumps
from .. import tasks
from ..models.matrix_model import MatrixSortProxy, QtMatrixModel
from ..models.plan_model import subscribe_weakly
from ..palette import plot_colors
from ..plots.cell_details import CellDetails
from ..plots.export import provenance_lines
from .evaluate_choices import EvaluateChoices
from .matrix_table import MatrixTable
from ..workspace import Workspace

class CellDelegate(QStyledItemDelegate):
    """Draws a selected cell with its colour kept and a highlight frame around it (the
    selection fill would hide the very colour the user is reading)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex) -> None:
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if not selected or index.data(Qt.ItemDataRole.BackgroundRole) is None:
            super().paint(painter, option, index)
            return
        plain = QStyleOptionViewItem(option)
        plain.state &= ~QStyle.StateFlag.State_Selected
        super().paint(painter, plain, index)
        painter.save()
        painter.setPen(QPen(option.palette.color(QPalette.ColorRole.Highlight), 2))
        painter.drawRect(option.rect.adjusted(1, 1, -1, -1))
        painter.restore()


class EvaluatePanel(QWidget):
    """Choose models and datasets, see the matrix, drill into a cell, export.

    Parameters: workspace - the session (models and plan); evaluate / cancel / study - the
    window's actions (declared once in gui/actions.py) shown as buttons here; cache_dir - the
    evaluation cache (None: the core's default, $MAL_EVAL_CACHE or ~/.cache/mal_desktop/eval).
    """

    def __init__(self, workspace: Workspace, evaluate: QAction | None = None,
                 cancel: QAction | None = None, study: QAction | None = None,
                 cache_dir: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("evaluatePanel")
        self._ws = workspace
        self.cache_dir = cache_dir
        self._names: dict[str, str] = {}
        self._run_outputs: dict[str, int] = {}  # outputs used as logits by the last evaluation
        self._run_plan = ""  # the steps the last evaluation's merged row measured, in words
        self._shown_stale = ""  # why the drill-down's cell is stale ("" when it is not)
        self.model = QtMatrixModel(self)
        self.proxy = MatrixSortProxy(self)
        self.proxy.setSourceModel(self.model)
        self._build([a for a in (evaluate, cancel, study) if a is not None])
        self.set_datasets(available_datasets())
        self.refresh_choices()
        workspace.modelsChanged.connect(self.refresh_choices)
        # "merged (current plan)" is offered while the plan has steps: follow every plan change
        # (undoable edits and projects being opened alike).
        self._listener = subscribe_weakly(workspace.plan, self, "_on_plan_change")

    def _build(self, actions: list[QAction]) -> None:
        self.choices = EvaluateChoices(self._ws, actions)
        # the choice column's parts, as the panel's (the window and tests reach them here)
        self.models_list = self.choices.models_list
        self.datasets_list = self.choices.datasets_list
        self.add_data_button = self.choices.add_data_button

        self.metric_combo = QComboBox()
        self.metric_combo.setObjectName("evalMetric")
        self.metric_combo.setToolTip("The metric the cells show and are coloured by")
        # Filled after the first show (the metrics come with the first cells): follow them.
        self.metric_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.metric_combo.currentIndexChanged.connect(self._on_metric_changed)
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setToolTip("Save the matrix as CSV or JSON")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_button.setAutoRaise(True)
        menu = QMenu(self.export_button)
        self.export_csv_action = menu.addAction("Matrix as CSV\u2026", self._ask_export_csv)
        self.export_json_action = menu.addAction("Matrix as JSON\u2026", self._ask_export_json)
        self.export_button.setMenu(menu)
        self.summary = QLabel("Tick models and data sets, then Evaluate (Ctrl+E).")
        self.summary.setObjectName("evalSummary")
        self.summary.setWordWrap(True)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        # The lists fold away when the matrix needs their room (a panel sharing the bottom
        # of a 1280 px window showed one column of values); this button brings them back.
        self.lists_button = QToolButton()
        self.lists_button.setText("\u25c2 Lists")  # short: the bar sets the matrix's least width
        self.lists_button.setCheckable(True)
        self.lists_button.setChecked(True)
        self.lists_button.setAutoRaise(True)
        self.lists_button.setToolTip("Show or hide the lists of models and data sets (they "
                                     "fold away when the matrix needs their room)")
        top = QHBoxLayout()
        top.setContentsMargins(2, 2, 2, 0)
        top.addWidget(self.lists_button)
        top.addWidget(QLabel("Show:"))
        top.addWidget(self.metric_combo)
        top.addStretch(1)
        top.addWidget(self.export_button)

        self.table = MatrixTable()
        self.table.setObjectName("evalMatrix")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # model order until clicked
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.setWordWrap(False)
        self.table.setItemDelegate(CellDelegate(self.table))
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        middle = QWidget()
        mid = QVBoxLayout(middle)
        mid.setContentsMargins(0, 0, 0, 0)
        mid.setSpacing(2)
        mid.addLayout(top)
        mid.addWidget(self.table, 1)
        mid.addWidget(self.summary)

        self.details = CellDetails()
        self.lists = self.choices
        self.lists_button.toggled.connect(self._show_lists)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        # the matrix first: a narrow panel gives the details (which need a selected cell) less
        for i, (widget, stretch) in enumerate(((self.choices, 0), (middle, 3),
                                               (self.details, 2))):
            self.splitter.addWidget(widget)
            self.splitter.setStretchFactor(i, stretch)
        self.splitter.setSizes([200, 560, 480])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        self._update_export()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        # Modest: the dock shares the bottom area with the curve; the splitter's natural width
        # (lists + table + two plots) would squeeze the curve to its minimum.
        return QSize(760, 320)

    # -- choices (the choice column's, evaluate_choices.py) ---------------------------------
    def refresh_choices(self) -> None:
        """The model list again from the workspace, ticks kept."""
        self.choices.refresh_choices()

    def set_datasets(self, datasets: dict[str, str], checked: str = "digits") -> None:
        self.choices.set_datasets(datasets, checked)

    def add_dataset(self, spec: str, ticked: bool = True) -> None:
        self.choices.add_dataset(spec, ticked)

    @Slot(str)
    def follow_data(self, name: str) -> None:
        self.choices.follow_data(name)

    def set_checked(self, keys: list[str]) -> None:
        self.choices.set_checked(keys)

    def selected_models(self) -> list[tuple[str, str]]:
        return self.choices.selected_models()

    def selected_datasets(self) -> list[str]:
        return self.choices.selected_datasets()

    def _on_plan_change(self, change: Any) -> None:
        if change.kind in ("insert", "remove", "reset"):  # not per lambda tick: steps counted
            self.refresh_choices()
        # Any edit (a lambda included) changes the merged model its cells measured.
        self.mark_plan_stale()
        now = self._entry_outputs()
        for ref in self.model.refs():  # a model now scored on another output than its cells
            if ref != tasks.MERGED_REF and now.get(ref, 0) != self._run_outputs.get(ref, 0):
                self.model.mark_stale(ref, "another output is used as its logits now")
        self._reshow_current()

    def _entry_outputs(self) -> dict[str, int]:
        """Model file -> the output its loaded model uses as logits, where not the first or
        where chosen: a merged file opens with the output it recorded, so output 0, once
        chosen, must be passed on too (a file reference without one reads the recorded one)."""
        ws = self._ws
        return {e.path_text: e.model.output_index for e in [ws.base, *ws.zoo.values()]
                if e is not None and e.path_text
                and (e.model.output_index or e.output_choice is not None)}

    def mark_plan_stale(self) -> None:
        """The plan changed: the merged model's cells measured another merge."""
        reason = "the plan was edited after this evaluation"
        refs = self.model.refs()
        if tasks.MERGED_REF in refs and not self.model.stale_reason(refs.index(tasks.MERGED_REF)):
            self.model.mark_stale(tasks.MERGED_REF, reason)
            self.summary.setText(self.summary.text() + f" \u2014 \u26a0 {tasks.MERGED_NAME}: "
                                 f"stale ({reason}); Evaluate again (Ctrl+E).")
            self._reshow_current()

    def _reshow_current(self) -> None:
        """The drill-down of the selected cell again (its row may have turned stale)."""
        index = self.table.currentIndex()
        if index.isValid():
            row = self.proxy.mapToSource(index).row()
            if self.model.stale_reason(row) != self._shown_stale:
                self._show_index(index)

    def reset(self) -> None:
        """A new session: no matrix, no details, the choices of the (empty) workspace."""
        self.model.clear()
        self._names = {}
        self.details.clear("Select a cell of the matrix for per-class accuracy and the "
                           "confusion matrix.")
        self.summary.setText("Tick models and data sets, then Evaluate (Ctrl+E).")
        self.summary.setToolTip("")
        self._update_export()
        self.refresh_choices()

    # -- running ----------------------------------------------------------------------------
    def prepare_run(self) -> Callable[..., Any] | None:
        """The job factory evaluating the ticked models x datasets, with the table reset to
        show them pending; None (and a hint in the summary) when nothing is ticked."""
        rows, datasets = self.selected_models(), self.selected_datasets()
        if not rows or not datasets:
            self.summary.setText("Tick at least one model and one data set.")
            return None
        ws = self._ws
        refs = [ref for ref, _ in rows]
        plan = models = specs = None
        entries = [e for e in [ws.base, *ws.zoo.values()] if e is not None]
        # the output each model was given as its logits (the first is the files' default)
        outputs = self._run_outputs = self._entry_outputs()
        self._run_plan = ""
        if tasks.MERGED_REF in refs:
            plan = ws.plan.copy()
            plan.data = None
            # what the merged row measured, for its exports (the plan changes afterwards)
            self._run_plan = "; ".join(f"{i + 1}. {s.label} lambda={s.lam:g} {s.align} "
                                       f"{s.method}" for i, s in enumerate(plan.steps))
            models = {e.path_text: e.model for e in entries}
            specs = {e.path_text: e.tree.spec for e in entries}
        self._names = dict(rows)
        self.model.set_layout(rows, datasets)
        self._refresh_metrics()
        self.details.clear("Evaluating\u2026 select a finished cell for its details.")
        self.summary.setText(f"Evaluating {len(rows)} model{'s' if len(rows) != 1 else ''} on "
                             f"{len(datasets)} data set{'s' if len(datasets) != 1 else ''}\u2026")
        self._update_export()
        return partial(tasks.eval_matrix_task, refs=refs, datasets=datasets,
                       cache_dir=self.cache_dir, plan=plan, models=models, specs=specs,
                       outputs=outputs)

    @Slot(object)
    def add_cell(self, cell: MatrixCell) -> None:
        """A finished cell arrived (progress payload): show it now."""
        self.model.set_cell(cell)
        if self.metric_combo.count() == 0:
            self._refresh_metrics()
        done = len(self.model.finished_cells())
        total = self.model.rowCount() * max(0, self.model.columnCount() - 1)
        self.summary.setText(f"Evaluating\u2026 {done}/{total} cells")

    @Slot(object)
    def set_result(self, result: MatrixResult) -> None:
        """Show the finished matrix (the job's result)."""
        self.model.set_result(result, self._names)
        self._refresh_metrics()
        n = len(result.cells)
        text = (f"{n} cell{'s' if n != 1 else ''}: {result.computed} computed, {result.cached} "
                "from the cache")
        errors, other_data = result.errors, result.not_applicable
        if other_data:  # text for an image model: the cell does not apply, nothing failed
            text += f" \u2014 {len(other_data)} n/a (the model reads other data)"
        if errors:
            text += f" \u2014 <span style='color:{plot_colors().bad}'>{len(errors)} failed</span>"
        self.summary.setText(text)
        self.summary.setToolTip("\n".join([f"Result cache: {result.cache_dir}", *errors,
                                           *other_data]))
        self._update_export()
        self._give_matrix_room()
        self.table.fit_columns()
        if self.table.currentIndex().isValid():
            self._show_index(self.table.currentIndex())
        else:  # the "Evaluating..." note of prepare_run no longer applies
            self.details.clear("Select a cell of the matrix for per-class accuracy and the "
                               "confusion matrix.")

    def _give_matrix_room(self) -> None:
        """A new result: widen the matrix to show its columns, taking the room from the cell
        details (down to their minimum), which need a selected cell to show anything, then
        folding the lists away (their choice is made; the lists button brings them back). In
        a narrow panel the splitter had shrunk all three and cut the values off."""
        sizes = self.splitter.sizes()
        if len(sizes) != 3 or not sum(sizes):
            return
        want = self.table.needed_width() - self.table.width()
        grow = min(want, sizes[2] - self.details.minimumSizeHint().width())
        if grow > 0:
            sizes = [sizes[0], sizes[1] + grow, sizes[2] - grow]
            self.splitter.setSizes(sizes)
        if want - max(grow, 0) > 0 and sizes[0] > 0:
            self.lists_button.setChecked(False)

    @Slot(bool)
    def _show_lists(self, shown: bool) -> None:
        """Fold the lists away (their width goes to the matrix) or bring them back (taking it
        from the matrix)."""
        self.lists_button.setText(("\u25c2" if shown else "\u25b8") + " Lists")  # fold / unfold
        sizes = self.splitter.sizes()
        if shown == self.lists.isVisible() or len(sizes) != 3:
            return
        room = self.lists.sizeHint().width()
        self.lists.setVisible(shown)
        if shown:
            self.splitter.setSizes([room, max(0, sizes[1] - room), sizes[2]])
        else:
            self.splitter.setSizes([0, sizes[1] + sizes[0], sizes[2]])

    def run_stopped(self) -> None:
        """The run was cancelled or failed: finished cells stay (they are cached; the next run
        resumes), the others read "not computed"."""
        self.model.mark_stopped()
        if not self.table.currentIndex().isValid():
            self.details.clear("Select a finished cell of the matrix for its details.")
        cells = self.model.finished_cells()
        computed = sum(1 for c in cells if not c.cached and not c.error)
        cached = sum(1 for c in cells if c.cached)
        total = self.model.rowCount() * (self.model.columnCount() - 1)
        # counted as the finished summary counts them: a resumed run that computed nothing new
        # said "Stopped after 30 cells"
        self.summary.setText(f"Stopped: {len(cells)} of {total} cells done ({computed} computed, "
                             f"{cached} from the cache); Evaluate again to resume (finished "
                             "cells are cached).")

    # -- table ----------------------------------------------------------------------------
    def _refresh_metrics(self) -> None:
        combo = self.metric_combo
        current = self.model.metric
        combo.blockSignals(True)
        combo.clear()
        for name in self.model.metrics() or ["accuracy"]:
            combo.addItem(name, name)
            if name in METRICS:
                combo.setItemData(combo.count() - 1, METRICS[name].description,
                                  Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(max(0, combo.findData(current)))
        combo.blockSignals(False)
        self.model.set_metric(str(combo.currentData()))

    @Slot(int)
    def _on_metric_changed(self, _index: int) -> None:
        metric = self.metric_combo.currentData()
        if metric:
            self.model.set_metric(str(metric))

    @Slot(QItemSelection, QItemSelection)
    def _on_selection(self, selected: QItemSelection, _deselected: QItemSelection) -> None:
        indexes = selected.indexes()
        if indexes:
            self._show_index(indexes[0])

    def select_cell(self, row: int, col: int) -> None:
        """Select source cell (row, col) in the table (drill-down follows)."""
        index = self.proxy.mapFromSource(self.model.index(row, col))
        self.table.setCurrentIndex(index)
        self.table.selectionModel().select(index, self.table.selectionModel().SelectionFlag
                                           .ClearAndSelect)

    def _show_index(self, index: QModelIndex) -> None:
        source = self.proxy.mapToSource(index)
        if source.column() == 0:
            self.details.clear(f"<b>{html.escape(self.model.row_name(source.row()))}</b>: "
                               "select one of its cells.")
            return
        cell = self.model.cell(source.row(), source.column())
        stale = self._shown_stale = self.model.stale_reason(source.row())
        provenance = self._cell_provenance(cell)
        if stale:
            provenance["stale"] = stale
        self.details.set_provenance(provenance)
        self.details.show_cell(cell, self.model.row_name(source.row()),
                               per_token=is_text_dataset(cell.dataset) if cell else False,
                               stale=stale)

    def _cell_provenance(self, cell: MatrixCell | None) -> dict[str, object]:
        """Where a cell's numbers come from, for the drill-down's CSV exports: the model's
        reference and hash, the data set's fingerprint, the cell's metrics and the pipeline."""
        if cell is None:
            return {}
        meta: dict[str, object] = {"model_ref": cell.model}
        if cell.model == tasks.MERGED_REF and self._run_plan:
            meta["plan_steps"] = self._run_plan
        result = self.model.result
        if result is not None:
            for m in result.models:
                if m.get("ref") == cell.model:
                    meta["model_sha256"] = m.get("hash")
            for d in result.datasets:
                if d.get("name") == cell.dataset:
                    meta["dataset_fingerprint"] = d.get("fingerprint")
            meta["pipeline"] = result.pipeline
            meta["evaluator_version"] = result.to_json()["evaluator_version"]
        meta["metrics"] = ", ".join(f"{k}={v}" for k, v in cell.metrics.items())
        meta["source"] = "result cache" if cell.cached else "computed in this run"
        return meta

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.model.refresh_colors()
        super().changeEvent(event)

    # -- export ---------------------------------------------------------------------------
    def _update_export(self) -> None:
        ok = self.model.result is not None
        self.export_button.setEnabled(ok)
        self.export_button.setToolTip("Save the matrix as CSV or JSON" if ok else
                                      "Export needs a finished evaluation")

    def export_csv(self, path: Path) -> Path:
        """Write the finished matrix as CSV (one line per cell), atomically. Raises OSError."""
        result = self.model.result
        assert result is not None
        provenance = {  # what a reader of the table needs to know where each number came from
            "models": "; ".join(f"{m.get('name')} ({m.get('ref')}, sha256 {m.get('hash')})"
                                for m in result.models),
            "datasets": "; ".join(f"{d.get('name')} (fingerprint {d.get('fingerprint')})"
                                  for d in result.datasets),
            "metrics": ", ".join(result.metrics),
            "pipeline": result.pipeline,
            "evaluator_version": result.to_json()["evaluator_version"],
        }
        return atomic_write_text(path, provenance_lines(provenance) + result.to_csv())

    def export_json(self, path: Path) -> Path:
        """Write the finished matrix as JSON, atomically. Raises OSError."""
        assert self.model.result is not None
        text = dumps(self.model.result.to_json(), indent=1, default=str) + "\n"
        return atomic_write_text(path, text)

    def _ask_export(self, kind: str, writer: Callable[[Path], Path]) -> None:
        from ..log import report_error

        start = str(Path.home() / f"eval-matrix.{kind}")
        chosen, _ = QFileDialog.getSaveFileName(self.window(), f"Export Matrix as {kind.upper()}",
                                                start, f"{kind.upper()} (*.{kind})")
        if not chosen:
            return
        path = Path(chosen)
        if path.suffix.lower() != f".{kind}":
            path = path.with_name(path.name + f".{kind}")
        try:
            writer(path)
        except (OSError, ValueError) as exc:
            report_error(f"{path}: cannot save the matrix ({exc})", parent=self.window())

    def _ask_export_csv(self) -> None:
        self._ask_export("csv", self.export_csv)

    def _ask_export_json(self) -> None:
        self._ask_export("json", self.export_json)
