"""The assembly plan: a headless document of merge steps, with change events and JSON form.

A step merges layer ``source_layer`` of zoo model ``source`` into ``base_layer`` of the base with
factor ``lam``. Steps run in order; each sees the base as left by the steps before it. The plan
emits :class:`PlanChange` events so views (the GUI's item models) stay in sync without Qt here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..dataspec import map_spec_paths
from ..errors import PlanError
from ..jsonio import loads_untrusted

PLAN_VERSION = 1
ALIGN_MODES = ("chain", "local", "none")
UNMATCHED_POLICIES = ("zero", "keep")


@dataclass(frozen=True)
class AssemblyStep:
    """One merge step. ``params`` holds the merge method's extra parameters (e.g. TIES density).

    ``norms``: (donor module, base module) pairs of normalisations merged with this step along
    the layer's own unit maps: a block merged as a whole (merge/blocks.py) gives its norms (a
    transformer layer's RMSNorms on the residual stream) to the first of its steps whose layer
    reads their space. Empty for a layer merged on its own.
    """

    source: str
    source_layer: str
    base_layer: str
    lam: float = 0.5
    align: str = "chain"
    unmatched: str = "zero"
    method: str = "linear"
    params: tuple[tuple[str, Any], ...] = ()
    norms: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not all(isinstance(pair, tuple) and len(pair) == 2
                   and all(isinstance(m, str) and m for m in pair) for pair in self.norms):
            raise PlanError(f"{self.label}: 'norms' must be [donor module, base module] "
                            f"pairs, got {self.norms!r}")
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)):
            raise PlanError(f"{self.label}: lambda must be a number, got {self.lam!r}")
        if not (0.0 <= self.lam <= 1.0):  # NaN fails this too
            raise PlanError(f"{self.label}: lambda must be in [0, 1], got {self.lam}")
        if self.align not in ALIGN_MODES:
            raise PlanError(f"{self.label}: alignment must be one of "
                            f"{', '.join(ALIGN_MODES)}, got {self.align!r}")
        if self.unmatched not in UNMATCHED_POLICIES:
            raise PlanError(f"{self.label}: unmatched must be 'zero' or "
                            f"'keep', got {self.unmatched!r}")
        # Imported here, not at the top: the methods need torch, and the GUI imports this module
        # on its start-up path, before torch is wanted (the window must appear fast).
        from .methods import method_values

        try:  # the method and its parameters are checked here, before any work starts
            method_values(self.method, dict(self.params))
        except PlanError as exc:
            raise PlanError(f"{self.label}: {exc}") from None

    @property
    def label(self) -> str:
        return f"{self.source}:{self.source_layer} -> {self.base_layer}"

    @property
    def route(self) -> tuple[str, str, str]:
        """(zoo model, its layer, base layer): two steps with one route merge the same layer
        into the same place twice."""
        return self.source, self.source_layer, self.base_layer

    def to_json(self) -> dict[str, Any]:
        d = {"source": self.source, "source_layer": self.source_layer,
             "base_layer": self.base_layer, "lambda": float(self.lam), "align": self.align,
             "unmatched": self.unmatched, "method": self.method}
        if self.params:
            d["params"] = dict(self.params)
        if self.norms:
            d["norms"] = [list(pair) for pair in self.norms]
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> "AssemblyStep":
        if not isinstance(d, dict):
            raise PlanError(f"a plan step must be a JSON object, got {d!r}")
        if not isinstance(d.get("params", {}), dict):
            raise PlanError(f"a plan step's 'params' must be an object of name: number, got "
                            f"{d['params']!r}")
        try:
            return AssemblyStep(
                source=str(d["source"]), source_layer=str(d["source_layer"]),
                base_layer=str(d["base_layer"]), lam=d.get("lambda", 0.5),
                align=str(d.get("align", "chain")), unmatched=str(d.get("unmatched", "zero")),
                method=str(d.get("method", "linear")),
                params=tuple(sorted(d.get("params", {}).items())),
                norms=_norm_pairs(d.get("norms", [])))
        except KeyError as exc:
            raise PlanError(f"a plan step lacks the field {exc.args[0]!r}: {d}") from None
        except (TypeError, ValueError) as exc:
            raise PlanError(f"a plan step has a bad value ({exc}): {d}") from None


def _norm_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """A step's JSON "norms" as pairs; anything else is left for the step to refuse."""
    if not isinstance(value, list):
        return (value,)  # type: ignore[return-value]
    return tuple(tuple(pair) if isinstance(pair, list) else pair for pair in value)


@dataclass(frozen=True)
class PlanChange:
    """What changed: kind in {"reset", "insert", "remove", "update", "move", "models"}."""

    kind: str
    index: int = -1
    to_index: int = -1


def check_output_index(value: Any, what: str) -> int:
    """``value`` as an output index (a whole number >= 0), or PlanError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"{what} must be a whole number >= 0 (which output is the logits), "
                        f"got {value!r}")
    return value


@dataclass
class AssemblyPlan:
    """Base model path, zoo models by name, optional evaluation data, and the ordered steps.

    base_output / zoo_outputs: for a model returning several outputs, which one is the logits
    (the base's; a zoo model's by name); a model not listed uses its first output. Optional in
    the JSON ("base_output", "zoo_outputs"), written only when set.
    """

    base: str = ""
    zoo: dict[str, str] = field(default_factory=dict)
    data: str | None = None
    steps: list[AssemblyStep] = field(default_factory=list)
    base_output: int | None = None
    zoo_outputs: dict[str, int] = field(default_factory=dict)
    _listeners: list[Callable[[PlanChange], None]] = field(default_factory=list, repr=False,
                                                           compare=False)
    _last_listeners: list[Callable[[PlanChange], None]] = field(default_factory=list,
                                                                repr=False, compare=False)

    # -- events -------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[PlanChange], None], last: bool = False) -> None:
        """Call ``listener`` with every change. ``last`` listeners are called after all the
        others: one that acts on the views of the plan (moving a selection to a step's new row)
        must find every view already showing the change."""
        (self._last_listeners if last else self._listeners).append(listener)

    def unsubscribe(self, listener: Callable[[PlanChange], None]) -> None:
        for listeners in (self._listeners, self._last_listeners):
            if listener in listeners:
                listeners.remove(listener)

    def _emit(self, change: PlanChange) -> None:
        for listener in [*self._listeners, *self._last_listeners]:
            listener(change)

    # -- edits (the GUI wraps each in an undo command) ----------------------------------
    def insert_step(self, index: int, step: AssemblyStep) -> None:
        index = max(0, min(index, len(self.steps)))
        self.steps.insert(index, step)
        self._emit(PlanChange("insert", index))

    def remove_step(self, index: int) -> AssemblyStep:
        step = self.steps.pop(index)
        self._emit(PlanChange("remove", index))
        return step

    def replace_step(self, index: int, step: AssemblyStep) -> AssemblyStep:
        old = self.steps[index]
        self.steps[index] = step
        self._emit(PlanChange("update", index))
        return old

    def update_step(self, index: int, **changes: Any) -> AssemblyStep:
        """Replace step ``index`` by a copy with ``changes`` (validated); returns the old step."""
        return self.replace_step(index, replace(self.steps[index], **changes))

    def move_step(self, index: int, to_index: int) -> None:
        step = self.steps.pop(index)
        self.steps.insert(to_index, step)
        self._emit(PlanChange("move", index, to_index))

    def set_models(self, base: str | None = None, zoo: dict[str, str] | None = None) -> None:
        if base is not None:
            self.base = base
        if zoo is not None:
            self.zoo = dict(zoo)
        self._emit(PlanChange("models"))

    def set_outputs(self, base_output: int | None, zoo_outputs: dict[str, int]) -> None:
        """Which output is the logits, for the base (None: the first) and zoo models by name
        (a model not listed: the first); emits a "models" change when that changes."""
        outputs = {str(k): v for k, v in zoo_outputs.items()}
        if (base_output, outputs) == (self.base_output, self.zoo_outputs):
            return
        self.base_output, self.zoo_outputs = base_output, outputs
        self._emit(PlanChange("models"))

    def copy(self, data: str | None = None) -> "AssemblyPlan":
        """A private copy (no listeners): models, outputs and steps; ``data`` when given."""
        return AssemblyPlan(self.base, dict(self.zoo), data if data is not None else self.data,
                            list(self.steps), self.base_output, dict(self.zoo_outputs))

    def reset(self, other: "AssemblyPlan") -> None:
        """Take over another plan's content (e.g. after loading a project)."""
        self.base, self.zoo, self.data = other.base, dict(other.zoo), other.data
        self.steps = list(other.steps)
        self.base_output, self.zoo_outputs = other.base_output, dict(other.zoo_outputs)
        self._emit(PlanChange("reset"))

    # -- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": PLAN_VERSION, "base": self.base, "zoo": dict(self.zoo),
                             "steps": [s.to_json() for s in self.steps]}
        if self.data:
            d["data"] = self.data
        if self.base_output is not None:
            d["base_output"] = self.base_output
        if self.zoo_outputs:
            d["zoo_outputs"] = dict(self.zoo_outputs)
        return d

    def outputs_by_path(self) -> dict[str, int]:
        """Model path -> chosen output index, for the models whose output was chosen."""
        out = {self.zoo[name]: index for name, index in self.zoo_outputs.items()
               if name in self.zoo}
        if self.base_output is not None:
            out[self.base] = self.base_output
        return out

    @staticmethod
    def from_json(d: Any, where: str = "plan") -> "AssemblyPlan":
        """Parse a plan dict. Relative model paths stay as given (see ``resolve_paths``)."""
        if not isinstance(d, dict):
            raise PlanError(f"{where}: a plan must be a JSON object")
        version = d.get("version", PLAN_VERSION)
        if not isinstance(version, int) or version > PLAN_VERSION:
            raise PlanError(f"{where}: plan version {version!r} is newer than this mal_desktop "
                            f"understands ({PLAN_VERSION})")
        if not isinstance(d.get("base"), str) or not d["base"]:
            raise PlanError(f"{where}: 'base' must name the base model file")
        zoo = d.get("zoo", {})
        if not isinstance(zoo, dict) or not all(isinstance(v, str) for v in zoo.values()):
            raise PlanError(f"{where}: 'zoo' must map model names to files")
        steps = d.get("steps", [])
        if not isinstance(steps, list):
            raise PlanError(f"{where}: 'steps' must be a list")
        parsed = []
        for i, raw in enumerate(steps):
            try:
                parsed.append(AssemblyStep.from_json(raw))
            except PlanError as exc:
                raise PlanError(f"{where}: step {i + 1}: {exc}") from None
        base_output = d.get("base_output")
        if base_output is not None:
            check_output_index(base_output, f"{where}: 'base_output'")
        zoo_outputs = d.get("zoo_outputs", {})
        if not isinstance(zoo_outputs, dict):
            raise PlanError(f"{where}: 'zoo_outputs' must map zoo model names to output indices")
        for name, index in zoo_outputs.items():
            if name not in zoo:
                raise PlanError(f"{where}: 'zoo_outputs' names {name!r}, which the plan's 'zoo' "
                                f"does not list ({', '.join(zoo) or 'empty'})")
            check_output_index(index, f"{where}: 'zoo_outputs' of {name!r}")
        plan = AssemblyPlan(base=d["base"], zoo={str(k): v for k, v in zoo.items()},
                            data=d.get("data"), steps=parsed, base_output=base_output,
                            zoo_outputs={str(k): v for k, v in zoo_outputs.items()})
        for i, step in enumerate(plan.steps):
            if step.source not in plan.zoo:
                raise PlanError(f"{where}: step {i + 1} uses zoo model {step.source!r}, which the "
                                f"plan's 'zoo' does not list ({', '.join(plan.zoo) or 'empty'})")
        return plan

    def repeated_steps(self) -> list[tuple[int, int]]:
        """See :func:`repeated_steps`."""
        return repeated_steps(self.steps)

    def resolve_paths(self, relative_to: Path) -> "AssemblyPlan":
        """A copy whose relative model/data paths are resolved against ``relative_to``."""
        def fix(p: str) -> str:
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else (relative_to / q).resolve())
        data = map_spec_paths(self.data, fix) if self.data else self.data
        return AssemblyPlan(fix(self.base), {k: fix(v) for k, v in self.zoo.items()}, data,
                            list(self.steps), self.base_output, dict(self.zoo_outputs))


def repeated_steps(steps: Sequence[AssemblyStep]) -> list[tuple[int, int]]:
    """(first, again) indices of steps with the route of an earlier one: the second merges the
    already merged layer once more (in effect a lambda of 1 - (1 - l1)(1 - l2)), which is a
    slip (a block dropped where one of its layers already had a step) more often than a
    wish."""
    first: dict[tuple[str, str, str], int] = {}
    repeats = []
    for i, step in enumerate(steps):
        if step.route in first:
            repeats.append((first[step.route], i))
        else:
            first[step.route] = i
    return repeats


def load_plan(path: str | Path) -> AssemblyPlan:
    """Read a PLAN.json file; paths inside are relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    try:
        raw = loads_untrusted(text)
    except ValueError as exc:
        raise PlanError(f"{path}: not valid JSON ({exc})") from None
    return AssemblyPlan.from_json(raw, str(path)).resolve_paths(path.parent.resolve())

