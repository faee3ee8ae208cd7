"""The long operations of mal_desktop as generator jobs, driven alike by the CLI and the GUI.

Every job yields :class:`ProgressEvent` (with partial results as payloads), checks its cancel
token at loop boundaries and returns its result. Models are loaded once per job through a
:class:`ModelCache`; callers that already hold models (the GUI) pass them in.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generator, Mapping

import torch

from .align.activations import activation_matching
from .align.matching import WEIGHT_RESTARTS, aligned_target, whole_model_match
from .errors import PlanError
from .evaluate.curves import StateAt, interpolation_job, lerp_states
from .evaluate.datasets import Dataset, load_dataset
from .evaluate.evaluator import (EvalResult, check_data_fits, check_kind_fits, evaluate_model,
                                 fit_inputs)
from .evaluate.metrics import CurveResult, lambda_grid
from .graph.discover import discover_spec, export_module
from .graph.file_spec import MAX_PARAMETERS, spec_record
from .graph.spec import PermutationSpec, permute_state
from .io.files import (check_model_output, load_model, open_from_headers, read_header,
                       save_model)
from .io.hashing import cached_file_sha256
from .io.model import LoadedModel
from .io.pages import PageReleaser
from .merge.assemble import (StepAlignment, align_step, check_step_fits, merge_step,
                             output_must_not_be_input, step_diagnostics, step_tensors)
from .merge.blocks import expand_block_steps
from .merge.chains import SharedChains
from .merge.plan import AssemblyPlan, AssemblyStep
from .merge.preflight import Shapes, kind_note, preflight_plan
from .merge.results import StepDiagnostics
from .progress import CancelToken, ProgressEvent, run_job, sub_job

PROBE_SIZE = 512  # samples for activation matching
# Models above this size are opened from their headers first: a plan's steps are checked, and
# the app shows their tree, before the weights are read. Smaller ones load in about a second,
# and discovery runs them instead of exporting.
HEADER_FIRST_PARAMETERS = MAX_PARAMETERS


def large_from_headers(path: str, output: int | None = None) -> LoadedModel | None:
    """``path``'s model built from its headers (``open_from_headers``) when it is over
    ``HEADER_FIRST_PARAMETERS``; None for a smaller one, or one whose headers do not describe
    its architecture."""
    model = open_from_headers(path, output)
    if model is None or sum(t.numel() for t in model.state().values()) \
            <= HEADER_FIRST_PARAMETERS:
        return None
    return model


class ModelCache:
    """Loads each model file once and discovers its permutation spaces once."""

    def __init__(self, models: Mapping[str, LoadedModel] | None = None,
                 arch: str | None = None,
                 specs: Mapping[str, PermutationSpec] | None = None,
                 outputs: Mapping[str, int] | None = None) -> None:
        """``outputs``: per model path, which output is the logits for a model returning
        several (the first when not given)."""
        self._models: dict[str, LoadedModel] = dict(models or {})
        self._outputs: dict[str, int] = dict(outputs or {})
        # Discovery traces the model (torch.export): pure Python holding the GIL. Callers that
        # already know the specs (the GUI's layer trees) pass them so a job never re-traces.
        self._specs: dict[str, PermutationSpec] = dict(specs or {})
        self._headers: dict[str, dict[str, torch.Tensor] | None] = {}  # see from_headers
        self._arch = arch

    def model(self, path: str) -> LoadedModel:
        if path not in self._models:
            self._models[path] = load_model(path, self._arch, self._outputs.get(path))
        return self._models[path]

    def spec(self, path: str) -> PermutationSpec:
        if path not in self._specs:
            self._specs[path] = discover_spec(self.model(path))
        return self._specs[path]

    def from_headers(self, path: str) -> tuple[dict[str, torch.Tensor], PermutationSpec] | None:
        """(state on the meta device, spec) of a large model from its headers alone, so a
        plan's steps are checked against its layers in seconds rather than after minutes of
        reading; the spec is kept for the loaded model (the same layers: discovery of a model
        this large exports a meta-device twin either way). None for a model in memory, one
        small enough to load at once (``HEADER_FIRST_PARAMETERS``), or one whose headers do
        not describe its architecture."""
        if path in self._models:
            return None
        if path not in self._headers:  # opened once per plan, however many steps use it
            model = large_from_headers(path, self._outputs.get(path))
            if model is not None and path not in self._specs:
                self._specs[path] = discover_spec(model)
            self._headers[path] = model.state() if model is not None else None
        state = self._headers[path]
        return None if state is None else (state, self._specs[path])


@dataclass(frozen=True)
class AssemblyResult:
    """The merged model (base architecture), one diagnostics record per step, the saved path."""

    model: LoadedModel
    steps: tuple[StepDiagnostics, ...]
    out: Path | None
    memory_estimate: int = 0  # bytes, from the pre-flight check

    def to_json(self) -> dict:
        return {"out": str(self.out) if self.out else None,
                "steps": [s.to_json() for s in self.steps],
                "preflight": {"memory_estimate_bytes": self.memory_estimate}}


def _plan_shapes(plan: AssemblyPlan, in_memory: Mapping[str, LoadedModel]
                 ) -> dict[str, Shapes]:
    """Tensor shapes of the plan's models, from file headers or from the models already in
    memory (which may have no file): read once, for the block expansion and the pre-flight."""
    return {p: ({k: tuple(v.shape) for k, v in in_memory[p].state().items()}
                if p in in_memory else read_header(p).shapes)
            for p in [plan.base, *plan.zoo.values()]}


def _preflight(plan: AssemblyPlan, shapes: Mapping[str, Shapes], cache: ModelCache) -> int:
    """Checks before any tensor is read; returns the memory estimate.

    ``shapes``: :func:`_plan_shapes`. Then each step is checked against the layers of large
    models built from their headers (``ModelCache.from_headers``): a step between layers of
    different layouts is refused before gigabytes are read, not after.
    """
    report = preflight_plan(plan, shapes)
    if not report.ok:
        raise PlanError("; ".join(report.problems))
    for i, step in enumerate(plan.steps):
        base, donor = cache.from_headers(plan.base), cache.from_headers(plan.zoo[step.source])
        if base is not None and donor is not None:
            check_step_fits(step, *base, *donor, f"step {i + 1} ({step.label})")
    return report.memory_bytes


def _expand_blocks(plan: AssemblyPlan, shapes: Mapping[str, Shapes],
                   cache: ModelCache) -> AssemblyPlan:
    """A plan step naming two blocks becomes one step per layer (merge/blocks.py), as the
    app's block drop makes them: a plan file could only list a transformer layer's seven
    layers and their norms by hand. Layers are told from the tensor ``shapes``
    (:func:`_plan_shapes`); a spec is found only for a model a block step names (from its
    headers when it is large)."""

    def is_layer(path: str, name: str) -> bool:
        """True for a weight layer, and for a name holding no tensor at all (a typo: the
        pre-flight check names it, with close names, before any model is loaded)."""
        keys = shapes[path]
        inside = [k for k in keys if k.startswith(f"{name}.")]
        return not inside or f"{name}.weight" in keys or any(
            k.startswith(f"{name}.weight_") for k in inside)  # recurrent layers

    def spec_of(path: str) -> PermutationSpec:
        headers = cache.from_headers(path)
        return headers[1] if headers is not None else cache.spec(path)

    return expand_block_steps(plan, spec_of, is_layer)


def assemble_job(plan: AssemblyPlan, cancel: CancelToken | None = None,
                 models: Mapping[str, LoadedModel] | None = None, out: Path | None = None,
                 arch: str | None = None, specs: Mapping[str, PermutationSpec] | None = None
                 ) -> Generator[ProgressEvent, None, AssemblyResult]:
    """Run every step of ``plan`` on the base; save to ``out`` (atomic) when given.

    Pre-flight: the plan is checked on file headers before any tensor is loaded, then every step
    against the model graphs before any alignment runs. Cancelling leaves no file behind.
    """
    cancel = cancel or CancelToken()
    if not plan.steps:
        raise PlanError("the plan has no steps: add at least one (a zoo layer merged into a "
                        "base layer)")
    if out is not None:  # a bad output is refused before the work, not after it
        check_model_output(out)
        output_must_not_be_input(Path(out), {plan.base: 0, **{p: 0 for p in plan.zoo.values()}})
    cache = ModelCache(models, arch, specs, plan.outputs_by_path())
    yield ProgressEvent("preflight", 0.0, "checking the plan")
    shapes = _plan_shapes(plan, models or {})
    plan = _expand_blocks(plan, shapes, cache)
    memory = _preflight(plan, shapes, cache)
    yield ProgressEvent("preflight", 0.0, f"plan fits; about {memory / 2**20:.1f} MiB of working "
                        "memory beyond the models' files")
    base = cache.model(plan.base)
    if plan.data:  # the plan is scored on it: a dataset the base cannot read is refused now
        check_data_fits(base, _dataset(plan.data))
    base_spec = cache.spec(plan.base)
    state = base.state()
    cases = []
    for i, step in enumerate(plan.steps):
        cancel.raise_if_cancelled()
        donor = plan.zoo[step.source]
        cases.append(check_step_fits(step, state, base_spec, cache.model(donor).state(),
                                     cache.spec(donor), f"step {i + 1} ({step.label})"))
    reports: list[StepDiagnostics] = []
    n = len(plan.steps)
    # Inputs are memory-mapped: a step reads one layer's pages of each model. Handing them back
    # after the step keeps the resident set at the merged layers plus the step at hand.
    pages = PageReleaser()
    chains = SharedChains(plan.steps)
    for i, step in enumerate(plan.steps):
        cancel.raise_if_cancelled()
        donor_path = plan.zoo[step.source]
        donor_state, donor_spec = cache.model(donor_path).state(), cache.spec(donor_path)
        yield ProgressEvent("align", i / n, f"step {i + 1}/{n}: aligning {step.label}")
        alignment: StepAlignment = yield from sub_job(
            align_step(step, state, base_spec, donor_state, donor_spec, cancel=cancel,
                       chains=chains), i / n, (i + 0.9) / n, f"step {i + 1}/{n}: ")
        before = state
        state = merge_step(step, alignment, state, base_spec, donor_state, donor_spec, seed=i)
        base_keys, donor_keys = step_tensors(step, base_spec, donor_spec)
        for t in [before[k] for k in base_keys] + [donor_state[k] for k in donor_keys]:
            pages.release(t)
        diag = step_diagnostics(i, step, alignment, base_spec, donor_spec, cases[i])
        kind = kind_note(base.id_range() is not None,
                         cache.model(donor_path).id_range() is not None, step.source)
        if kind:  # merged as asked, but said (the app's drop hint says it too)
            diag = replace(diag, note="; ".join(n for n in (diag.note, kind) if n))
        reports.append(diag)
        yield ProgressEvent("align", (i + 1) / n, f"step {i + 1}/{n}: merged {step.label} "
                            f"at lambda {step.lam:g} ({alignment.align})", diag)
    cancel.raise_if_cancelled()
    metadata = {
        "name": Path(out).stem if out else "merged",
        "kind": "assembly",
        "base": plan.base,
        "plan": plan.to_json(),
        "inputs_sha256": {p: _sha(cache.model(p), p) for p in [plan.base, *plan.zoo.values()]},
        "steps": [r.to_json() for r in reports],
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if base.outputs > 1:  # the merged file is read back with the same logits (io.files)
        metadata["output_index"] = base.output_index
    # The base's own provenance (its dataset, its accuracy) describes the base, not the result:
    # keep it under its own key so nothing reads it as the merged model's.
    # shared, not copied: unchanged tensors stay the base's (memory-mapped) ones, so a merge of
    # one block of a large model holds that block, not a second model, and streams to disk
    merged = base.with_state(state, share=True,
                             metadata={**metadata, "base_provenance": base.metadata})
    saved = None
    if out is not None:
        yield ProgressEvent("save", 1.0, f"saving {out}")
        saved = save_model(merged, out, spec=spec_record(merged, base_spec))
    return AssemblyResult(merged, tuple(reports), saved, memory)


def _sha(model: LoadedModel, path: str) -> str | None:
    """The input's content hash for provenance; None for a model that exists only in memory.

    Computed here, when a merge is saved, not when the model was loaded: hashing reads the
    whole file. It is cached per file version, so the same input is hashed once."""
    sha = model.content_sha256()
    if sha:
        return sha
    return cached_file_sha256(path) if Path(path).is_file() else None


def _dataset(data: str | Dataset) -> Dataset:
    return data if isinstance(data, Dataset) else load_dataset(data)


def plan_curve_job(plan: AssemblyPlan, step_index: int, data: str | Dataset, grid: int = 21,
                   cancel: CancelToken | None = None,
                   models: Mapping[str, LoadedModel] | None = None, arch: str | None = None,
                   repair: bool = False, specs: Mapping[str, PermutationSpec] | None = None
                   ) -> Generator[ProgressEvent, None, CurveResult]:
    """Loss/accuracy of the plan's step ``step_index`` swept over lambda, naive vs aligned.

    Steps before it run as planned; steps after it are left out (they would need re-aligning at
    every lambda). "aligned" uses the step's alignment (chain when the step says none, for
    comparison: the result's ``alignment["step_align"]`` says what the step itself does). A
    step naming two blocks counts as the steps of its layers (as in :func:`assemble_job`);
    ``step_index`` counts those, negative from the end (-1: the last step).
    """
    cancel = cancel or CancelToken()
    cache = ModelCache(models, arch, specs, plan.outputs_by_path())
    if isinstance(data, str):  # text for an image model is said before the text is read
        check_kind_fits(cache.model(plan.base), data)
    dataset = _dataset(data)
    plan = _expand_blocks(plan, _plan_shapes(plan, models or {}), cache)
    if -len(plan.steps) <= step_index < 0:
        step_index += len(plan.steps)
    if not 0 <= step_index < len(plan.steps):
        raise PlanError(f"no step {step_index + 1} in the plan ({len(plan.steps)} steps)")
    base, base_spec = cache.model(plan.base), cache.spec(plan.base)
    check_data_fits(base, dataset)  # before the alignments, not after them
    state = base.state()
    chains = SharedChains(plan.steps)  # the steps share chain solves as they do in assemble_job
    for i, step in enumerate(plan.steps[: step_index + 1]):
        donor_path = plan.zoo[step.source]
        donor_state, donor_spec = cache.model(donor_path).state(), cache.spec(donor_path)
        check_step_fits(step, state, base_spec, donor_state, donor_spec, f"step {i + 1}")
        if i < step_index:
            alignment = yield from sub_job(
                align_step(step, state, base_spec, donor_state, donor_spec, cancel=cancel,
                           chains=chains), 0.0, 0.0, f"step {i + 1} (before the curve's): ")
            state = merge_step(step, alignment, state, base_spec, donor_state, donor_spec, seed=i)
    step = plan.steps[step_index]
    donor_path = plan.zoo[step.source]
    donor_state, donor_spec = cache.model(donor_path).state(), cache.spec(donor_path)
    yield ProgressEvent("align", 0.0, f"aligning {step.label}")
    mode = step.align if step.align != "none" else "chain"
    aligned = yield from sub_job(align_step(step, state, base_spec, donor_state, donor_spec,
                                            mode, cancel, chains), 0.0, 0.0,
                                 f"step {step_index + 1}: ")
    naive = run_job(align_step(step, state, base_spec, donor_state, donor_spec, "none", cancel))
    prefix = state

    def series(alignment: StepAlignment):
        return lambda lam: merge_step(step, alignment, prefix, base_spec, donor_state,
                                      donor_spec, lam=lam, seed=step_index)

    result = yield from interpolation_job(base, dataset, lambda_grid(grid),
                                          {"naive": series(naive), "aligned": series(aligned)},
                                          cancel, repair=repair)
    case = check_step_fits(step, prefix, base_spec, donor_state, donor_spec,
                           f"step {step_index + 1}")
    diag = step_diagnostics(step_index, step, aligned, base_spec, donor_spec, case).to_json()
    return replace(result, alignment={"align": aligned.align, "requested": mode,
                                      "step_align": step.align,
                                      "fallback": diag["fallback"],
                                      "fallback_reason": diag["fallback_reason"],
                                      "scope": "plan step", "steps": [diag],
                                      "plan_steps": len(plan.steps)})


@dataclass(frozen=True)
class MergeSeries:
    """The naive and aligned merges of a curve as functions lambda -> base-architecture state."""

    naive: StateAt
    aligned: StateAt
    align: str  # the alignment that ran ("weight", "chain", "local", "none"; "chain+local" mixed)
    note: str = ""  # e.g. why chain alignment fell back to local
    # JSON-able: what ran, what was asked for, per step fallbacks and the spaces fixed and why
    report: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, StateAt]:
        return {"naive": self.naive, "aligned": self.aligned}


def curve_series(cache: ModelCache, base_path: str, target_path: str, *,
                 align: str | None = None, layers: list[tuple[str, str]] | None = None,
                 cancel: CancelToken | None = None,
                 probe: torch.Tensor | None = None,
                 restarts: int = WEIGHT_RESTARTS) -> MergeSeries:
    """Align once, then merge at any lambda: the two series of an interpolation curve.

    Without ``layers`` the two models must share an architecture: the whole model is
    interpolated, naive (index-aligned) vs whole-model weight matching (align "weight", with
    ``restarts`` descents: see ``align.matching.weight_matching``) or activation matching on the
    ``probe`` batch (align "activation").
    With ``layers`` [(source_layer, base_layer), ...] only those layers are merged into the
    base, all at the same lambda; "aligned" uses ``align`` (chain by default).
    """
    b_state, t_state = cache.model(base_path).state(), cache.model(target_path).state()
    if not layers:
        align = align or "weight"
        if align not in ("weight", "activation", "none"):
            raise PlanError(f"--align {align} needs --layers; whole-model curves use 'weight' "
                            "or 'activation'")
        b_shapes = {k: tuple(v.shape) for k, v in b_state.items()}
        t_shapes = {k: tuple(v.shape) for k, v in t_state.items()}
        if b_shapes != t_shapes:
            # the same tensors at other sizes: widths differ, the usual case between zoo models
            how = "in width" if b_shapes.keys() == t_shapes.keys() else "in architecture"
            raise PlanError(f"{base_path} and {target_path} differ {how} (a whole-model curve "
                            "needs equal shapes): pass --layers SRC:DST to merge chosen layers")
        aligned_state = t_state
        report: dict = {"align": align, "requested": align, "fallback": False,
                        "fallback_reason": "", "scope": "whole model"}
        if align != "none":
            spec = cache.spec(base_path)
            report.update(_spaces_json(spec))
            if align == "weight":
                result = run_job(whole_model_match(b_state, t_state, spec, restarts=restarts,
                                                   cancel=cancel))
                aligned_state = aligned_target(t_state, spec, result)
                report.update({"start": ("identity kept" if result.restart < 0 else "identity"
                                         if result.restart == 0 else "random"),
                               "runs": result.restarts,
                               "identity_objective": result.identity_objective,
                               "final_objective": result.objective})
            else:
                if probe is None:
                    raise PlanError("activation matching needs a probe batch of data")
                perms, copy_orders = activation_matching(
                    cache.model(base_path).module, cache.model(target_path).module, spec, probe,
                    _probe_program(cache.model(base_path), probe))
                aligned_state = permute_state(t_state, spec, perms, copy_orders)
        return MergeSeries(lerp_states(b_state, t_state), lerp_states(b_state, aligned_state),
                           align, report=report)
    align = align or "chain"
    if align not in ("chain", "local", "none"):
        raise PlanError(f"--align {align} with --layers must be chain, local or none")
    steps = [AssemblyStep("target", src, dst, 1.0, align) for src, dst in layers]
    base_spec, t_spec = cache.spec(base_path), cache.spec(target_path)
    alignments: dict[str, list[StepAlignment]] = {}
    cases: list[str] = []
    for mode in ("none", align):
        alignments[mode] = []
        chains = SharedChains(steps)
        for step in steps:
            case = check_step_fits(step, b_state, base_spec, t_state, t_spec,
                                   f"--layers {step.label}")
            if mode == align:
                cases.append(case)
            alignments[mode].append(run_job(align_step(step, b_state, base_spec, t_state,
                                                       t_spec, mode, cancel, chains)))

    def series(mode: str) -> StateAt:
        def at(lam: float) -> dict:
            state = b_state
            for step, alignment in zip(steps, alignments[mode]):
                state = merge_step(step, alignment, state, base_spec, t_state, t_spec, lam=lam)
            return state
        return at

    ran = "+".join(sorted({a.align for a in alignments[align]}))
    notes = "; ".join(sorted({a.note for a in alignments[align] if a.note}))
    diags = [step_diagnostics(i, step, a, base_spec, t_spec, case).to_json()
             for i, (step, a, case) in enumerate(zip(steps, alignments[align], cases))]
    report = {"align": ran, "requested": align, "fallback": any(d["fallback"] for d in diags),
              "fallback_reason": notes, "scope": "layers", "steps": diags}
    return MergeSeries(series("none"), series(align), ran, notes, report)


def _spaces_json(spec: PermutationSpec) -> dict:
    """The spaces of a whole-model alignment: how many are free, and every fixed one with
    its reason."""
    return {"free_spaces": len(spec.free_spaces()), "spaces": len(spec.spaces),
            "fixed_spaces": [{"space": s.id, "size": s.size, "reason": s.reason}
                             for s in spec.spaces.values() if s.fixed]}


def _probe_program(model: LoadedModel, probe: torch.Tensor):
    """The program whose graph activation matching reads: the .pt2 file's own, or the module
    exported on the probe batch (one graph for every form: .pt2, state dict, safetensors)."""
    if model.program is not None:
        return model.program
    try:
        return export_module(model.module, probe)
    except Exception:  # noqa: BLE001 - not exportable: fall back to forward hooks
        return None


def model_curve_job(base_path: str, target_path: str, data: str | Dataset, *,
                    align: str | None = None, grid: int = 21,
                    layers: list[tuple[str, str]] | None = None,
                    cancel: CancelToken | None = None, arch: str | None = None,
                    repair: bool = False, cache: ModelCache | None = None,
                    restarts: int = WEIGHT_RESTARTS
                    ) -> Generator[ProgressEvent, None, CurveResult]:
    """The `mal curve` job: interpolate a target into a base, naive vs aligned.

    See :func:`curve_series` for ``align``, ``layers`` and ``restarts``. ``repair``
    re-estimates BatchNorm statistics at interior lambdas (reported in the result). ``cache``
    shares loaded models and their specs across calls (the study runs many curves on one zoo).
    """
    cancel = cancel or CancelToken()
    dataset = _dataset(data)
    cache = cache or ModelCache(None, arch)
    check_data_fits(cache.model(base_path), dataset)  # before the alignment, not after it
    yield ProgressEvent("align", 0.0, "aligning " + (", ".join(f"{s}:{d}" for s, d in layers)
                                                     if layers else "the whole model"))
    # activation matching probes with training inputs (never the test split it is scored on)
    probe_x = dataset.x_train[:PROBE_SIZE] if len(dataset.x_train) else dataset.x_test[:PROBE_SIZE]
    probe = fit_inputs(cache.model(base_path), probe_x, dataset.name)
    series = curve_series(cache, base_path, target_path, align=align, layers=layers,
                          cancel=cancel, probe=probe, restarts=restarts)
    result = yield from interpolation_job(cache.model(base_path), dataset, lambda_grid(grid),
                                          series.as_dict(), cancel, repair=repair)
    return replace(result, alignment=series.report)


def evaluate_job(model: LoadedModel | str, data: str | Dataset,
                 cancel: CancelToken | None = None, arch: str | None = None
                 ) -> Generator[ProgressEvent, None, EvalResult]:
    """Loss and accuracy of one model on a dataset's test split."""
    if isinstance(model, str):
        model = load_model(model, arch)
    dataset = _dataset(data)
    yield ProgressEvent("evaluate", 0.0, f"evaluating {model.name} on {dataset.name}")
    if cancel is not None:
        cancel.raise_if_cancelled()
    result = evaluate_model(model, dataset)
    yield ProgressEvent("evaluate", 1.0, f"loss {result.loss:.4f}, accuracy {result.accuracy:.1%}")
    return result


__all__ = ["ModelCache", "AssemblyResult", "MergeSeries", "assemble_job", "curve_series",
           "plan_curve_job", "model_curve_job", "evaluate_job"]
