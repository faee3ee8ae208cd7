"""The one selection every result panel follows: the selected step of the plan.

The interpolation curve and the alignment diagnostics both show the step selected in the
Assembly Plan (``Workspace.selected_step``), drawn from one place: the run results kept per step
(:class:`~mal_desktop.gui.run_results.RunResults`) and the run in progress. The presenter redraws
both panels whenever any of these changes: another step is selected, the plan is edited (undo
included), a project replaces the plan, a result arrives, a run starts, ends or is cancelled.
Drawing from the state (instead of patching each panel on each event) is what keeps the panels
in agreement: a panel cannot keep showing an old step's header, lambda or diagnostics.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, Slot

from ..models.plan_model import subscribe_weakly
from ..run_results import signature
from ..workspace import Workspace

if TYPE_CHECKING:
    from ..plots.curve_plot import CurvePlot
    from ..plots.diagnostics import DiagnosticsPanel


def step_title(index: int, label: str) -> str:
    """"Step 2: zoo:layers.0 -> layers.1", how every panel names a step."""
    return f"Step {index + 1}: {label}"


class SelectedStepPresenter(QObject):
    """Draws the curve and the diagnostics of the selected step.

    Parameters: workspace; runs - the RunController (its ``results``, ``live`` and run signals;
    typed QObject: views do not import controllers); curve and
    diagnostics - the panels; data - a callable giving the session's data set now (the curve of
    another data set is shown marked as such); provenance - a callable giving the models' files
    by name (exports write them into their header).
    """

    def __init__(self, workspace: Workspace, runs: QObject, curve: "CurvePlot",
                 diagnostics: "DiagnosticsPanel", data: Callable[[], str],
                 provenance: Callable[[], dict[str, str]] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ws = workspace
        self._runs = runs
        self._curve = curve
        self._diag = diagnostics
        self._data = data
        self._provenance = provenance or (lambda: {})
        workspace.selectedStepChanged.connect(self.render)
        workspace.modelsChanged.connect(self.render)
        self._listener = subscribe_weakly(workspace.plan, self, "_on_plan_change")
        runs.results.changed.connect(self.render)
        runs.runStarted.connect(self.render)
        runs.runStopped.connect(self.render)
        runs.runFinished.connect(self.render)
        runs.curvePoint.connect(self._on_point)
        self.render()

    def _on_plan_change(self, _change: Any) -> None:
        self.render()

    def _live_here(self) -> bool:
        """The run in progress sweeps the selected step of the plan as it is now."""
        live, ws = self._runs.live, self._ws
        i = ws.selected_step
        return live is not None and 0 <= i < len(ws.plan.steps) and \
            live.signature == signature(ws.plan.steps, i)

    @Slot(object)
    def _on_point(self, point: Any) -> None:
        if self._live_here():
            self._curve.add_point(point)

    @Slot()
    def render(self) -> None:
        """Redraw both panels for the selected step from the results and the live run."""
        ws = self._ws
        i = ws.selected_step
        steps = ws.plan.steps
        if not 0 <= i < len(steps):
            hint = ("Add a step (drag a zoo layer onto a base layer, or Add Step, Ctrl+Enter)"
                    if not steps else "Select a step in the Assembly Plan")
            self._curve.show_empty("Interpolation curve", f"{hint} to see its curve.")
            self._curve.set_lambda(None)
            self._diag.show_empty(f"{hint} to see how its alignment went.")
            return
        step = steps[i]
        title = step_title(i, step.label)
        data = self._data()
        found = self._runs.results.lookup(steps, i, data)
        record = found.record
        self._curve.set_lambda(step.lam)
        meta = {**self._provenance(), "step": title, "alignment": step.align,
                "method": step.method, "lambda": f"{step.lam:.3f}",
                # the curve of a later step starts from what the plan made of the base so far
                "at lambda 0": ("the base model" if i == 0 else
                                f"the base model with step{'s 1-' if i > 1 else ' '}{i} of the "
                                "plan merged first")}
        # said where it is read, not only in exports: step 8's curve started at a loss of 3.76
        # against the base's 3.49, with nothing saying steps 1-7 were merged first
        earlier = "" if i == 0 else ("step 1" if i == 1 else f"steps 1\u2013{i}")
        start = f"  \u2022  \u03bb 0 = base + {earlier}" if earlier else ""
        if self._live_here():
            live = self._runs.live
            meta["dataset"] = live.data
            self._curve.set_provenance(meta)
            self._curve.show_live(f"{title}  \u2022  {live.data}{start}", live.points)
        elif record is not None and record.curve is not None:
            meta["dataset"] = record.data
            notes = [d.get("note", "") for d in (record.curve.alignment or {}).get("steps", [])]
            if any(notes):  # e.g. one chain solve shared by a block's steps
                meta["alignment note"] = "; ".join(n for n in notes if n)
            self._curve.set_provenance(meta)
            self._curve.show_curve(record.curve, f"{title}  \u2022  {record.data}{start}",
                                   found.stale_reason, step.lam)
        else:
            self._curve.set_provenance(meta)
            self._curve.show_empty(title + start,
                                   "Not run yet: press <b>Run</b> (F5) for its curve.")
        if record is not None and record.diagnostics is not None:
            self._diag.set_provenance(meta)
            self._diag.show_step(record.diagnostics, i, found.stale_reason if not found.fresh
                                 else "")
        else:
            self._diag.show_empty(f"<b>{html.escape(title)}</b>: no diagnostics yet: press "
                                  "<b>Run</b> (F5) to align it.")
