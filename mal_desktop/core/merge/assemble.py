"""Run an assembly plan: align each donor layer to its base layer, merge, record diagnostics.

Steps run in order on a working copy of the base state; each step sees the base as the steps
before it left it ("iterative" assembly). A step aligns (chain, local or none), maps the donor's
weight, bias and the norm that follows it into the base's shape (generalized permutations with
zero-padding) and merges them with the step's method and lambda. Input models are never touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Mapping

import numpy as np
import torch

from ..align.generalized import (Layout, Match, full_layout, split_layout, transform_tensor,
                                 unit_slices)
from ..align.heads import HeadFamily, expand_head_match, layer_family, refine_layer_heads
from ..align.local import Rider, align_layer_pair_job
from ..align.matching import chain_pairs
from ..errors import AlignmentError, PlanError
from ..graph.recurrent import recurrent_riders
from ..graph.spec import Axis, Layer, PermutationSpec, head_blocks
from ..progress import CancelToken, ProgressEvent
from .chains import ChainTooLarge, SharedChains
from .methods import merge_tensor
from .plan import AssemblyStep
from .preflight import LayerShape, check_layers, layer_hint
from .results import MAX_MATRIX, SideReport, SpaceReport, StepDiagnostics

State = dict[str, torch.Tensor]

# Running statistics describe the data a unit saw; a zero running_var would break BatchNorm, so
# base slots without a partner always keep theirs, whatever the step's unmatched policy.
RUNNING_STATS = ("running_mean", "running_var")

# Local alignment is a local search too (alternating out/in LAPs): a few seeded restarts, keeping
# the highest objective J, as for chains (chains.CHAIN_RESTARTS).
LOCAL_RESTARTS = 4


@dataclass(frozen=True)
class StepAlignment:
    """The alignment a step computed, reusable for every lambda of a curve."""

    out: Match
    inp: Match
    align: str
    objective: tuple[float, ...]
    costs: np.ndarray | None
    note: str = ""
    requested: str = ""  # the alignment asked for; differs from ``align`` after a fallback
    # where the kept run started: chain "identity" | "random" | "identity kept" (no run beat
    # its J); local "identity" | "random" | "out profile" | "in profile" | "given"
    start: str = ""
    runs: int = 0
    spaces: tuple[SpaceReport, ...] = ()


def _identity_alignment(base_w: torch.Tensor, target_w: torch.Tensor, bl: Layer,
                        spaces: tuple[SpaceReport, ...]) -> StepAlignment:
    (m_out, n_out), (m_in, n_in) = _units(base_w, target_w, bl)
    return StepAlignment(Match.identity(m_out, n_out), Match.identity(m_in, n_in), "none", (),
                         None, requested="none", start="identity", spaces=spaces)


def _layout(axis: Axis) -> tuple[int, ...]:
    """(block, tiles) of a layer axis, or (block, tiles, repeat, span) for grouped-query
    heads (``Axis.layout``)."""
    return (max(1, axis.block), max(1, axis.tiles)) + axis.layout[2:]


def _oriented(w: torch.Tensor, layer: Layer) -> torch.Tensor:
    """A layer's weight in (out, in, *kernel) orientation: GPT-2's Conv1D stores (in, out)."""
    return w.transpose(0, 1) if layer.transposed else w


def _units(base_w: torch.Tensor, target_w: torch.Tensor, bl: Layer
           ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((base, donor) output units, (base, donor) input units) of (out, in)-oriented weights,
    counted with the base layer's layouts (the rule book made the donor's agree)."""
    sizes = []
    for dim, axis in ((0, bl.out_axis), (1, bl.in_axis)):
        block, tiles = split_layout(_layout(axis))
        sizes.append((base_w.shape[dim] // (block * tiles), target_w.shape[dim] // (block * tiles)))
    return sizes[0], sizes[1]


def space_report(base_spec: PermutationSpec, target_spec: PermutationSpec, base_space: str,
                 target_space: str, optimised: bool) -> SpaceReport:
    """A :class:`SpaceReport` of one paired space; a space fixed in the target only is
    reported with its reason prefixed "target: "."""
    b, t = base_spec.spaces[base_space], target_spec.spaces[target_space]
    reason = b.reason if b.fixed else (f"target: {t.reason}" if t.fixed else "")
    return SpaceReport(base_space, target_space, b.size, t.size, b.fixed or t.fixed,
                       reason or ("fixed" if b.fixed or t.fixed else ""), optimised)


def _layer_spaces(bl: Layer, tl: Layer, base_spec: PermutationSpec, target_spec: PermutationSpec,
                  solved: bool) -> tuple[SpaceReport, ...]:
    """Reports of the out and in spaces of one layer pair (local alignment or none)."""
    reports = []
    for b_axis, t_axis in ((bl.out_axis, tl.out_axis), (bl.in_axis, tl.in_axis)):
        report = space_report(base_spec, target_spec, b_axis.space, t_axis.space, False)
        # local alignment keeps a side at the identity only when the base's space is fixed
        optimised = solved and not base_spec.spaces[b_axis.space].fixed
        reports.append(dataclasses.replace(report, optimised=optimised))
    return tuple(reports)


def align_step(step: AssemblyStep, base_state: State, base_spec: PermutationSpec,
               donor_state: State, donor_spec: PermutationSpec, mode: str | None = None,
               cancel: CancelToken | None = None, chains: SharedChains | None = None
               ) -> Generator[ProgressEvent, None, StepAlignment]:
    """Compute the generalized permutations for one step (``mode`` overrides step.align).

    ``chains``: the chain solves of the plan's steps, shared by the steps of one donor (see
    ``merge.chains``); without it the step's chain is solved on its own.
    """
    mode = mode or step.align
    bl, tl = base_spec.layer(step.base_layer), donor_spec.layer(step.source_layer)
    bw, tw = _oriented(base_state[bl.weight], bl), _oriented(donor_state[tl.weight], tl)
    out_layout, in_layout = _layout(bl.out_axis), _layout(bl.in_axis)
    if mode == "none":
        return _identity_alignment(bw, tw, bl,
                                   _layer_spaces(bl, tl, base_spec, donor_spec, False))
    out_fixed = base_spec.spaces[bl.out_axis.space].fixed
    in_fixed = base_spec.spaces[bl.in_axis.space].fixed
    bb = base_state.get(bl.bias) if bl.bias else None
    tb = donor_state.get(tl.bias) if tl.bias else None
    note, solve = "", None
    if mode == "chain":
        try:
            space_pairs, _ = chain_pairs(base_spec, donor_spec, bl.index, tl.index)
        except AlignmentError as exc:
            note = f"chain alignment not applicable ({exc}); used local alignment"
        else:
            chains = chains if chains is not None else SharedChains([step])
            try:
                solve = yield from chains.solve(step, space_pairs, base_state, base_spec,
                                                donor_state, donor_spec, cancel)
            except ChainTooLarge as exc:
                note = f"chain alignment not applicable ({exc}); used local alignment"
        if solve is not None:
            result = solve.result
            (m_out, n_out), (m_in, n_in) = _units(bw, tw, bl)
            out = result.matches.get(bl.out_axis.space) or Match.identity(m_out, n_out)
            inp = result.matches.get(bl.in_axis.space) or Match.identity(m_in, n_in)
            start = ("identity kept" if result.restart < 0
                     else "identity" if result.restart == 0 else "random")
            spaces = tuple(space_report(base_spec, donor_spec, bs, ts, bs in result.optimised)
                           for bs, ts in space_pairs.items())
            return StepAlignment(out, inp, "chain", tuple(result.objective_history),
                                 _matched_costs(bw, bb, tw, tb, out, inp, out_layout, in_layout),
                                 solve.note, requested=mode, start=start,
                                 runs=result.restarts, spaces=spaces)
    if cancel is not None:
        cancel.raise_if_cancelled()
    # attention heads move as blocks here (their dims in order): local alignment sees heads
    # as units, its matches are then stored dim by dim (align/heads.py). Where that would
    # compare unrelated entries, a free side is seen in smaller units, each free to go anywhere
    # (a relaxation that holds the true match), and refine_layer_heads then finds the side's
    # match over heads: dims that may move inside their heads are units of their own, and a
    # side repeating grouped-query heads (Q's rows, O's columns), whose query heads' order
    # inside each group is unknown, has its query heads as units.
    out_heads, in_heads = head_blocks(base_spec, bl.out_axis), head_blocks(base_spec, bl.in_axis)
    families = (layer_family(base_spec, donor_spec, bl.out_axis.space, tl.out_axis.space),
                layer_family(base_spec, donor_spec, bl.in_axis.space, tl.in_axis.space))
    relaxed = (None if out_fixed else _relaxed_units(bl.out_axis, families[0], out_heads),
               None if in_fixed else _relaxed_units(bl.in_axis, families[1], in_heads))
    la = yield from align_layer_pair_job(
        bw, bb, tw, tb, in_fixed=in_fixed, out_fixed=out_fixed,
        in_block=relaxed[1] or _head_layout(in_layout, in_heads),
        out_layout=relaxed[0] or _head_layout(out_layout, out_heads),
        riders=_riders(bl, tl, base_state, base_spec, donor_state), restarts=LOCAL_RESTARTS,
        name=f"{step.source}:{step.source_layer} -> {step.base_layer}", cancel=cancel)
    out_m = None if relaxed[0] else expand_head_match(la.out, *out_heads)
    in_m = None if relaxed[1] else expand_head_match(la.inp, *in_heads)
    history = tuple(la.objective_history)
    costs = np.asarray(la.costs, dtype=np.float64)
    if any(f is not None for f in families) and not (out_fixed and in_fixed):
        # then the dims inside the heads: alternate again, heads whole, dims free inside
        out_m, in_m, refined = refine_layer_heads(bw, bb, tw, tb, out_m, in_m,
                                                  (out_layout, in_layout), families,
                                                  (not out_fixed, not in_fixed))
        # the relaxed units' J is not one of these matches': the history starts again
        history = tuple(refined) if any(relaxed) else history + tuple(refined[1:])
        costs = _matched_costs(bw, bb, tw, tb, out_m, in_m, out_layout, in_layout)
    return StepAlignment(out_m, in_m, "local", history, costs, note, requested=mode,
                         start=la.start, runs=la.runs,
                         spaces=_layer_spaces(bl, tl, base_spec, donor_spec, True))


def _head_layout(layout: Layout, heads: tuple[int, int]) -> tuple[int, int]:
    """A layer axis's (block, tiles) with attention heads as units (graph.spec.head_blocks); a
    grouped-query head's dims, repeated once per query head, are one block of it."""
    block, tiles, repeat, _ = full_layout(layout)
    return block * heads[0] * repeat, tiles * heads[1]


def _relaxed_units(axis: Axis, family: HeadFamily | None, heads: tuple[int, int]
                   ) -> tuple[int, int] | None:
    """The (block, tiles) in which local alignment sees a free head side whose heads as blocks
    would compare unrelated entries (see align_step), or None to see its heads as blocks: its
    dims one by one where they may move inside their heads, a grouped-query side's query heads
    one by one where they may not. Fused projections (segments) keep their heads as blocks."""
    if family is None or heads[1] != 1:
        return None
    if family.inner_free[0]:
        return axis.block, axis.tiles
    if axis.repeat > 1:
        return axis.block * heads[0], axis.tiles
    return None


def _riders(bl: Layer, tl: Layer, base_state: State, base_spec: PermutationSpec,
            donor_state: State) -> list[Rider]:
    """The tensors besides weight and bias that move with a layer's units (a recurrent layer's
    hidden weight and bias, its reverse direction), paired by role, for local alignment."""
    donor = recurrent_riders(tl.weight, donor_state)
    riders = []
    for role, key in recurrent_riders(bl.weight, base_state).items():
        if role in donor:
            roles = tuple(None if side is None else (side, layout)
                          for side, layout in _rider_sides(key, base_spec, bl))
            riders.append(Rider(base_state[key], donor_state[donor[role]], roles))
    return riders


def _rider_sides(key: str, spec: PermutationSpec, layer: Layer
                 ) -> list[tuple[str | None, tuple[int, int]]]:
    """Per axis of a rider of ``layer``: the side ("out" / "in") it moves with and its layout;
    (None, (1, 1)) for an axis on neither of the layer's spaces."""
    sides: list[tuple[str | None, tuple[int, int]]] = []
    for axis in spec.axes.get(key, ()):
        if axis is not None and axis.space == layer.out_axis.space:
            sides.append(("out", _layout(axis)))
        elif axis is not None and axis.space == layer.in_axis.space:
            sides.append(("in", _layout(axis)))
        else:
            sides.append((None, (1, 1)))
    return sides


def _matched_costs(bw: torch.Tensor, bb: torch.Tensor | None, tw: torch.Tensor,
                   tb: torch.Tensor | None, out: Match, inp: Match, out_layout: Layout,
                   in_layout: Layout) -> np.ndarray:
    """Cost C = W_B Q_in W_T^T + b_B b_T^T at the matched (slot, unit) pairs, for a histogram
    (weights in (out, in) orientation; a unit's rows in every tile count together, grouped-
    query copies in the order the match gives them): per base slot, its entries' inner product
    with the target mapped on both axes."""
    def per_slot(b: torch.Tensor, t: torch.Tensor, axes: dict) -> torch.Tensor:
        mapped, _ = transform_tensor(t, axes)
        return (unit_slices(b.double(), 0, out_layout)
                * unit_slices(mapped.double(), 0, out_layout)).sum(1)

    cost = per_slot(bw, tw, {0: (out, out_layout), 1: (inp, in_layout)})
    if bb is not None and tb is not None:
        cost += per_slot(bb, tb, {0: (out, out_layout)})
    return cost[list(out.rows)].cpu().numpy()


def _paired_tensors(bl: Layer, tl: Layer, base_spec: PermutationSpec,
                    donor_spec: PermutationSpec, norms: tuple[tuple[str, str], ...] = ()
                    ) -> list[tuple[str, str | None, str]]:
    """(base key, donor key or None, role) for the weight, bias, the norm that follows and,
    for a recurrent layer, the tensors riding with it (role "rider.<name>"); ``norms`` (a
    block's, see AssemblyStep) ride on the layer's spaces too (role "rider.norm.<key>")."""
    pairs: list[tuple[str, str | None, str]] = [(bl.weight, tl.weight, "weight")]
    if bl.bias is not None:
        pairs.append((bl.bias, tl.bias, "bias"))  # a donor without bias counts as zero bias
    donor_norm = {key.rsplit(".", 1)[-1]: key for key in tl.norm}
    for key in bl.norm:
        suffix = key.rsplit(".", 1)[-1]
        if suffix in donor_norm:
            pairs.append((key, donor_norm[suffix], f"norm.{suffix}"))
    donor_riders = recurrent_riders(tl.weight, donor_spec.axes)
    for role, key in recurrent_riders(bl.weight, base_spec.axes).items():
        pairs.append((key, donor_riders.get(role), f"rider.{role}"))
    for donor_module, base_module in norms:
        for key, donor_key in _module_tensors(base_module, donor_module, base_spec, donor_spec):
            pairs.append((key, donor_key, f"rider.norm.{key}"))
    return pairs


def _module_tensors(base_module: str, donor_module: str, base_spec: PermutationSpec,
                    donor_spec: PermutationSpec) -> list[tuple[str, str]]:
    """(base key, donor key) of a module's own tensors (``<module>.<name>``), paired by name;
    a name only one side has is left out (checked by :func:`_check_norms`)."""
    pairs = []
    for key in base_spec.module_tensors(base_module):
        donor_key = f"{donor_module}.{key.rpartition('.')[2]}"
        if donor_key in donor_spec.axes:
            pairs.append((key, donor_key))
    return pairs


def _check_norms(step: AssemblyStep, bl: Layer, base_spec: PermutationSpec,
                 donor_spec: PermutationSpec, where: str) -> None:
    """A step's norms must exist in both models with the same tensors, every axis on one of
    the layer's two spaces (they move by its unit maps). Raises PlanError."""
    spaces = {bl.out_axis.space, bl.in_axis.space}
    for donor_module, base_module in step.norms:
        pairs = _module_tensors(base_module, donor_module, base_spec, donor_spec)
        if not pairs or len(pairs) != len(base_spec.module_tensors(base_module)):
            raise PlanError(f"{where}: norm {base_module} of the base has no counterpart "
                            f"{donor_module} with the same tensors in {step.source}")
        for key, _ in pairs:
            axes = base_spec.axes[key]
            if not axes or any(a is None or a.space not in spaces for a in axes):
                raise PlanError(f"{where}: {key} does not lie on the units of {bl.name} (its "
                                "input or output), so its maps cannot move it")


def step_tensors(step: AssemblyStep, base_spec: PermutationSpec, donor_spec: PermutationSpec
                 ) -> tuple[list[str], list[str]]:
    """The base keys a step rewrites and the donor keys it reads (weight, bias, norm, riders)."""
    pairs = _paired_tensors(base_spec.layer(step.base_layer), donor_spec.layer(step.source_layer),
                            base_spec, donor_spec, step.norms)
    return [b for b, _, _ in pairs], [d for _, d, _ in pairs if d is not None]


def merge_step(step: AssemblyStep, alignment: StepAlignment, base_state: State,
               base_spec: PermutationSpec, donor_state: State, donor_spec: PermutationSpec,
               lam: float | None = None, seed: int = 0) -> State:
    """Return a new state: the base with the step's layer merged at ``lam`` (default step.lam).

    lambda 0 returns the base tensors themselves (bit for bit); other keys are shared, not copied.
    """
    lam = step.lam if lam is None else lam
    out = dict(base_state)
    if lam == 0.0:
        return out
    bl, tl = base_spec.layer(step.base_layer), donor_spec.layer(step.source_layer)
    out_layout, in_layout = _layout(bl.out_axis), _layout(bl.in_axis)
    params = dict(step.params)
    for base_key, donor_key, role in _paired_tensors(bl, tl, base_spec, donor_spec, step.norms):
        base_t = base_state[base_key]
        if role.startswith("rider."):
            matches = {"out": alignment.out, "in": alignment.inp}
            axes = {d: (matches[side], layout) for d, (side, layout)
                    in enumerate(_rider_sides(base_key, base_spec, bl)) if side is not None}
            if donor_key is None:  # a donor without recurrent bias: zero bias
                donor_t = torch.zeros([m.target_size * b * t for m, (b, t) in axes.values()],
                                      dtype=base_t.dtype)
            else:
                donor_t = donor_state[donor_key]
            aligned, mask = transform_tensor(donor_t.to(base_t.dtype), axes, base_t.shape)
        elif role == "weight":
            # map in (out, in) orientation, then store as the base does
            donor_t = _oriented(donor_state[donor_key], tl)
            axes = {0: (alignment.out, out_layout), 1: (alignment.inp, in_layout)}
            aligned, mask = transform_tensor(donor_t.to(base_t.dtype), axes,
                                             _oriented(base_t, bl).shape)
            aligned, mask = _oriented(aligned, bl).contiguous(), _oriented(mask, bl)
        else:
            if donor_key is None:  # a donor without bias counts as zero bias
                block, tiles = split_layout(out_layout)
                donor_t = torch.zeros(alignment.out.target_size * block * tiles,
                                      dtype=base_t.dtype)
            else:
                donor_t = donor_state[donor_key]
            aligned, mask = transform_tensor(donor_t.to(base_t.dtype),
                                             {0: (alignment.out, out_layout)}, base_t.shape)
        merged = merge_tensor(step.method, base_t, aligned, lam, params, seed)
        if step.unmatched == "keep" or role.removeprefix("norm.") in RUNNING_STATS:
            merged = torch.where(mask, merged, base_t)
        out[base_key] = merged
    return out


def side_report(match: Match, fixed: bool, space: str = "", reason: str = "",
                span: int = 0) -> SideReport:
    """``span`` > 0: the side repeats key/value heads of ``span`` dims (grouped-query Q rows or
    O columns), whose query heads the match may have reordered."""
    groups = match.matched // span if span else 0
    reordered = sum(c != tuple(range(len(c))) for c in match.copies) if span else 0
    return SideReport(match.base_size, match.target_size, "fixed" if fixed else match.case,
                      match.matched, match.padded, match.dropped, space,
                      (reason or "fixed") if fixed else "", groups, reordered)


def step_diagnostics(index: int, step: AssemblyStep, alignment: StepAlignment,
                     base_spec: PermutationSpec, donor_spec: PermutationSpec,
                     case_text: str) -> StepDiagnostics:
    """The plain-data report of one step (for the CLI's JSON and the GUI's diagnostics)."""
    bl = base_spec.layer(step.base_layer)

    def small(m: Match) -> np.ndarray | None:
        if max(m.base_size, m.target_size) > MAX_MATRIX:
            return None
        return m.matrix().numpy().astype(np.float32)

    return StepDiagnostics(
        index=index, label=step.label, align=alignment.align, case_text=case_text,
        out=_side(alignment.out, base_spec, bl.out_axis),
        inp=_side(alignment.inp, base_spec, bl.in_axis),
        objective=alignment.objective,
        costs=None if alignment.costs is None else np.array(alignment.costs, copy=True),
        out_matrix=small(alignment.out), in_matrix=small(alignment.inp), note=alignment.note,
        requested=alignment.requested or step.align, start=alignment.start,
        runs=alignment.runs, spaces=alignment.spaces)


def _side(match: Match, spec: PermutationSpec, axis: Axis) -> SideReport:
    sp = spec.spaces[axis.space]
    return side_report(match, sp.fixed, axis.space, sp.reason,
                       axis.span if axis.repeat > 1 else 0)


def _weight_layer(spec: PermutationSpec, name: str, owner: str, where: str) -> Layer:
    """``spec``'s weight layer ``name``, or a PlanError listing the layers ``owner`` has."""
    try:
        return spec.layer(name)
    except KeyError:
        if f"{name}.weight" in spec.axes:  # a module with a weight, not a linear or conv
            raise PlanError(f"{where}: {owner}'s {name} is not a linear or conv layer (an "
                            "embedding or a norm, say): only those are merge steps") from None
        hint = layer_hint(name, [layer.name for layer in spec.layers])
        raise PlanError(f"{where}: {owner} has no weight layer {name!r}{hint}") from None


def check_step_fits(step: AssemblyStep, base_state: State, base_spec: PermutationSpec,
                    donor_state: State, donor_spec: PermutationSpec, where: str) -> str:
    """Raise PlanError unless the step can run; return its width-case text."""
    bl = _weight_layer(base_spec, step.base_layer, "the base", where)
    tl = _weight_layer(donor_spec, step.source_layer, step.source, where)
    verdict = check_layers(LayerShape.of(bl, base_spec, tuple(base_state[bl.weight].shape)),
                           LayerShape.of(tl, donor_spec, tuple(donor_state[tl.weight].shape)))
    if not verdict.ok:
        raise PlanError(f"{where}: {verdict.reason}")
    _check_norms(step, bl, base_spec, donor_spec, where)
    for key in (tl.weight, tl.bias):  # (a model built from headers holds no values yet)
        if key is not None and not donor_state[key].is_meta \
                and not torch.isfinite(donor_state[key]).all():
            raise PlanError(f"{where}: {step.source} tensor {key} has NaN or inf values")
    return verdict.case_text


def output_must_not_be_input(out: Path, inputs: Mapping[str, object]) -> None:
    """Never write to an input file, nor to a folder holding one (a sharded output replaces
    the whole folder): the result would silently replace a model."""
    target = out.expanduser().resolve()
    for p in inputs:
        source = Path(p).expanduser().resolve()
        if source == target or target in source.parents:
            raise PlanError(f"{out}: refusing to overwrite an input model; choose another output")
