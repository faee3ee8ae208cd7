"""Plain, immutable results of assembly steps: safe to send across threads and to JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SideReport:
    """One side (out or in) of a step's alignment: sizes, width case and unit counts."""

    base: int
    target: int
    case: str  # "wider" | "equal" | "narrower" (the base relative to the target) | "fixed"
    matched: int
    padded: int  # base slots with no target partner (zero-padded)
    dropped: int  # target units left out
    space: str = ""  # the base's permutation space on this side
    reason: str = ""  # why it is fixed (Space.reason: "class output", "network input", ...)
    # grouped-query attention (the side repeats key/value heads: Q's rows, O's columns): the
    # matched key/value heads, and how many of them had their query heads reordered (0, 0 else)
    groups: int = 0
    groups_reordered: int = 0


@dataclass(frozen=True)
class SpaceReport:
    """One permutation space a step's alignment saw: the base space and its target partner,
    whether it was fixed and by what (the spaces' ``reason``, the target's marked as such), and
    whether the alignment that ran matched it (False: it kept the truncated identity)."""

    base: str
    target: str
    base_size: int
    target_size: int
    fixed: bool
    reason: str
    optimised: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StepDiagnostics:
    """What the GUI's diagnostics panel shows for one step (numpy arrays are fresh CPU copies).

    out_matrix/in_matrix: the (partial) permutation matrices Q_out (m x n) and Q_in, as float32
    0/1 arrays (None when a side is too large to show, see ``MAX_MATRIX``); costs: the matched
    entries of the final out-side cost matrix (histogram); objective: J per alternating
    iteration or coordinate-descent sweep.
    """

    index: int
    label: str
    align: str  # the alignment that actually ran: "chain" | "local" | "none"
    case_text: str
    out: SideReport
    inp: SideReport
    objective: tuple[float, ...]
    costs: np.ndarray | None = field(default=None, compare=False)
    out_matrix: np.ndarray | None = field(default=None, compare=False)
    in_matrix: np.ndarray | None = field(default=None, compare=False)
    note: str = ""  # e.g. "chain alignment not applicable (depth differs): used local"
    requested: str = ""  # the step's alignment ("chain" | "local" | "none"); "" when unknown
    start: str = ""  # where the kept run started (see StepAlignment.start)
    runs: int = 0  # runs made (restarts and starts); the best J was kept
    spaces: tuple[SpaceReport, ...] = ()

    @property
    def fallback(self) -> bool:
        """True when the alignment that ran is not the one the step asked for."""
        return bool(self.requested) and self.requested != self.align

    def to_json(self) -> dict[str, Any]:
        side = lambda s: s.__dict__.copy()  # noqa: E731
        return {"index": self.index, "label": self.label, "align": self.align,
                "requested": self.requested or self.align, "fallback": self.fallback,
                "fallback_reason": self.note if self.fallback else "",
                "start": self.start, "runs": self.runs,
                "case": self.case_text, "out": side(self.out), "in": side(self.inp),
                "spaces": [s.to_json() for s in self.spaces],
                "objective": [float(j) for j in self.objective],
                "final_objective": float(self.objective[-1]) if self.objective else None,
                "note": self.note}


MAX_MATRIX = 512  # larger permutation matrices are not shipped to the GUI (memory, drawing)
