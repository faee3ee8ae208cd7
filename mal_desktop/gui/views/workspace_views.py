"""The views over the session's workspace, made once the engine is up (they import it): the
base model's layer tree, the zoo tabs, the assembly plan, the interpolation curve, the alignment
diagnostics and the Evaluate panel, wired to each other.

The main window places them (docks, central area) and forwards what its controllers report
(a run started or finished, results to forget, progress payloads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal, Slot

from ..plots.curve_plot import CurvePlot
from ..plots.diagnostics import DiagnosticsPanel
from ..workspace import Workspace
from .assembly_panel import AssemblyPanel
from .evaluate_panel import EvaluatePanel
from .layer_tree_view import LayerTreePane, ZooTabs

if TYPE_CHECKING:
    from ..actions import Actions


class WorkspaceViews(QObject):
    """The panes and panels over ``workspace``.

    Parameters: workspace; actions - the window's actions (the Evaluate panel shows Evaluate,
    Cancel and Run MAL Study). Attributes: ``base_pane``, ``zoo_tabs``, ``assembly_panel``,
    ``curve_plot``, ``diagnostics``, ``evaluate_panel``. Signals: ``dropHint(str, bool)`` from
    every layer pane (what a hovered drop would do, or why not).
    """

    dropHint = Signal(str, bool)

    def __init__(self, workspace: Workspace, actions: "Actions",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ws = workspace
        self.base_pane = LayerTreePane(workspace, "base")  # follows workspace.base
        self.zoo_tabs = ZooTabs(workspace)  # one pane per zoo model, in step with workspace.zoo
        self.zoo_tabs.setObjectName("zooTabs")
        self.zoo_tabs.setTabsClosable(True)
        self.zoo_tabs.tabCloseRequested.connect(self._close_zoo_tab)
        self.assembly_panel = AssemblyPanel(workspace)
        self.curve_plot = CurvePlot()
        self.diagnostics = DiagnosticsPanel()
        self.evaluate_panel = EvaluatePanel(workspace, actions.evaluate, actions.cancel,
                                            actions.run_study)
        for pane in (self.base_pane, self.zoo_tabs):
            pane.dropHint.connect(self.dropHint)
        self.curve_plot.lambdaDragged.connect(self.assembly_panel.apply_lambda)
        self.assembly_panel.selectedLambdaChanged.connect(self.curve_plot.set_lambda)
        workspace.selectedStepChanged.connect(self.diagnostics.select_step)

    @Slot(int)
    def _close_zoo_tab(self, index: int) -> None:
        entry = getattr(self.zoo_tabs.widget(index), "entry", None)
        if entry is not None and entry.name in self._ws.zoo:
            # Undoable (with its steps): the undo stack's clean state marks the change.
            self._ws.remove_zoo(entry.name)

    def show_payload(self, payload: Any) -> None:
        """Show a partial result of a run or an export: one step's diagnostics, a curve point."""
        kind = type(payload).__name__  # no isinstance: the classes live in the engine
        if kind == "StepDiagnostics":
            self.diagnostics.show_step(payload)
        elif kind == "CurvePoint":
            self.curve_plot.add_point(payload)

    @Slot(int, str)
    def start_run(self, _step_index: int, title: str) -> None:
        """A run started: an empty curve titled ``title``, no diagnostics of older runs."""
        self.curve_plot.clear()
        self.curve_plot.set_title(title)
        self.diagnostics.forget()

    @Slot(object)
    def show_run(self, result: Any) -> None:
        """A run finished (a tasks.RunResult): its full curve."""
        self.curve_plot.set_result(result.curve)

    @Slot()
    def forget_diagnostics(self) -> None:
        """The plan was edited: diagnostics of the old plan would mislead."""
        self.diagnostics.forget()

    @Slot()
    def clear_results(self) -> None:
        """A new session: no curve, no diagnostics."""
        self.curve_plot.clear()
        self.diagnostics.clear()
