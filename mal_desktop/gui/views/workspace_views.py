"""The views over the session's workspace, made once the engine is up (they import it): the
base model's layer tree, the zoo tabs, the assembly plan, the interpolation curve, the alignment
diagnostics and the Evaluate panel, wired to each other.

The curve and the diagnostics follow the selected step through one
:class:`~.selected_step.SelectedStepPresenter`. The main window places the views (docks, central
area) and forwards what its controllers report (results to forget).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QWidget

from ...core.merge.plan import AssemblyStep
from ..plots.curve_plot import CurvePlot
from ..plots.diagnostics import DiagnosticsPanel
from ..workspace import StepAdded, Workspace
from .assembly_panel import AssemblyPanel
from .evaluate_panel import EvaluatePanel
from .layer_tree_view import LayerTreePane, ZooTabs
from .selected_step import SelectedStepPresenter

if TYPE_CHECKING:
    from ..actions import Actions


class WorkspaceViews(QObject):
    """The panes and panels over ``workspace``.

    Parameters: workspace; actions - the window's actions (the Evaluate panel shows Evaluate,
    Cancel and Run MAL Study); runs - the run controller whose results the curve and the
    diagnostics show; data - the session's data set now (a callable).
    Attributes: ``base_pane``, ``zoo_tabs``, ``assembly_panel``, ``curve_plot``,
    ``diagnostics``, ``evaluate_panel``, ``presenter``. Signals: ``dropHint(str, bool)`` from
    every layer pane and from Add Step (what a drop would do or did, or why not);
    ``pairChanged()`` - the selected zoo layer or base layer changed (Add Step's target).
    """

    dropHint = Signal(str, bool)
    pairChanged = Signal()

    def __init__(self, workspace: Workspace, actions: "Actions", runs: QObject,
                 data: Callable[[], str], parent: QObject | None = None) -> None:
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
            pane.currentLayerChanged.connect(self.pairChanged)
        self.curve_plot.lambdaDragged.connect(self.assembly_panel.apply_lambda)
        self.presenter = SelectedStepPresenter(workspace, runs, self.curve_plot,
                                               self.diagnostics, data, self._provenance, self)

    def _provenance(self) -> dict[str, str]:
        ws = self._ws
        out = {}
        if ws.base is not None:
            out["base model"] = f"{ws.base.name} ({ws.base.path_text or 'in memory'})"
        i = ws.selected_step
        if 0 <= i < len(ws.plan.steps):
            donor = ws.zoo.get(ws.plan.steps[i].source)
            if donor is not None:
                out["zoo model"] = f"{donor.name} ({donor.path_text or 'in memory'})"
        return out

    @Slot(int)
    def _close_zoo_tab(self, index: int) -> None:
        entry = getattr(self.zoo_tabs.widget(index), "entry", None)
        if entry is not None and entry.name in self._ws.zoo:
            # Undoable (with its steps): the undo stack's clean state marks the change.
            self._ws.remove_zoo(entry.name)

    def focus_widget(self, name: str) -> QWidget:
        """The widget that takes the focus when panel ``name`` is gone to (Alt+1..6)."""
        if name == "zoo":
            pane = self.zoo_tabs.current_pane()
            return pane.view if pane is not None else self.zoo_tabs
        return {"base": self.base_pane.view, "plan": self.assembly_panel.view,
                "curve": self.curve_plot.grid, "diagnostics": self.diagnostics.grid,
                "evaluate": self.evaluate_panel.table}[name]

    # -- Add Step: the keyboard's way to do what a drag does ------------------------------------
    def selected_pair(self) -> AssemblyStep | None:
        """The step "selected zoo layer -> selected base layer" (None unless both are weight
        layers: a zoo tab's selected row and the base tree's selected row)."""
        pane = self.zoo_tabs.current_pane()
        if pane is None or pane.entry is None:
            return None
        source, target = pane.selected_layer(), self.base_pane.selected_layer()
        if not source or not target:
            return None
        return AssemblyStep(pane.entry.name, source, target)

    def add_selected_step(self) -> StepAdded | None:
        """Add :meth:`selected_pair` through ``Workspace.add_step`` (undoable); the outcome goes
        out through ``dropHint`` too. None (and a hint) when no pair is selected."""
        step = self.selected_pair()
        if step is None:
            self.dropHint.emit("Add Step: select a weight layer in a zoo tab and one in the base "
                               "model first (Alt+2, Alt+1)", False)
            return None
        added = self._ws.add_step(step)
        self.dropHint.emit(added.message, added.ok)
        return added

    # -- session ----------------------------------------------------------------------------
    @Slot()
    def clear_results(self) -> None:
        """A new session: the presenter redraws from the (emptied) results; the Evaluate panel
        forgets its matrix."""
        self.presenter.render()
        self.evaluate_panel.reset()
