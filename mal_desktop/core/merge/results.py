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

    def to_json(self) -> dict[str, Any]:
        side = lambda s: s.__dict__.copy()  # noqa: E731
        return {"index": self.index, "label": self.label, "align": self.align,
                "case": self.case_text, "out": side(self.out), "in": side(self.inp),
                "objective": [float(j) for j in self.objective],
                "final_objective": float(self.objective[-1]) if self.objective else None,
                "note": self.note}


MAX_MATRIX = 512  # larger permutation matrices are not shipped to the GUI (memory, drawing)
