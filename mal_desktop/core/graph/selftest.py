"""Checks that a discovered PermutationSpec is right: permuting its free spaces, or padding one
with dead units, must leave the network's function unchanged (mal_method.md section 9).

Tolerance: a difference passes when it is at most ``1e-4 * max(1, max |reference output|)``:
float32 sums re-ordered by a permutation differ by a few ulps of the output's magnitude, while a
wrongly permuted tensor changes outputs by a fraction of that magnitude.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import AlignmentError
from ..io.meta import tie_groups
from ..io.model import LoadedModel
from ..progress import CancelToken, Job, ProgressEvent, never_cancelled, run_job
from .spec import (PermutationSpec, compose_head_permutation, expand_index, permute_state,
                   repeated_spaces)

RELATIVE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SelfTestReport:
    """Outcome of :func:`self_test`.

    per_space: max |output difference| when only that free space is permuted (with the other
        spaces of its attention, which share its head permutation, and with the query heads of
        each grouped-query group reordered: ``random_copy_orders``).
    overall: the same with every free space permuted at once.
    passed: there is something to permute, every difference is within ``tolerance`` and the
        test had power (``status == "passed"``).
    unsupported: ops that forced spaces fixed (from the spec).
    tolerance: ``RELATIVE_TOLERANCE * max(1, max |reference output|)``.
    free: number of free spaces (0: nothing to permute, nothing was tested).
    inert: free spaces whose permutation changes no parameter (their units are all alike, so
        the test says nothing about them).
    powerless: free spaces where a deliberately broken permutation (one tensor's axis only)
        did not change the outputs: the probe cannot see that space.
    noised: parameters that were all zero and got noise for the test (the model is untouched).
    status: "passed", "FAILED", "nothing to permute" or "no power".
    """

    per_space: dict[str, float]
    overall: float
    passed: bool
    unsupported: list[str]
    tolerance: float = 0.0
    free: int = 0
    inert: tuple[str, ...] = ()
    powerless: tuple[str, ...] = ()
    noised: tuple[str, ...] = ()
    status: str = "passed"


def _randperm(n: int, gen: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(n, generator=gen)
    if n > 1 and torch.equal(perm, torch.arange(n)):
        perm = torch.roll(perm, 1)  # an identity would test nothing
    return perm


def random_permutations(spec: PermutationSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded random permutation per free space; never the identity when size > 1.

    Spaces of attention heads (``spec.head_groups``) get the permutations they allow: one head
    permutation per family, shared by its spaces, and per head a permutation of its dims shared
    by the segments and spaces that share it (Q with K, V with O; the identity where pinned).
    """
    gen = torch.Generator().manual_seed(seed)
    perms: dict[str, torch.Tensor] = {}
    head_perms: dict[str, torch.Tensor] = {}
    inner_perms: dict[str, list[torch.Tensor] | None] = {}
    for space in spec.free_spaces():
        group = spec.head_groups.get(space.id)
        if group is None or group.dim == 1:
            perms[space.id] = _randperm(space.size, gen)
            continue
        heads = head_perms.setdefault(group.family, _randperm(group.heads, gen))
        segments = []
        for k, (inner, why) in enumerate(group.parts):
            if inner not in inner_perms:
                inner_perms[inner] = None if why else [_randperm(group.dim, gen)
                                                       for _ in range(group.heads)]
            segments.append(compose_head_permutation(heads, inner_perms[inner], group.dim)
                            + k * group.heads * group.dim)
        perms[space.id] = torch.cat(segments)
    return perms


def random_copy_orders(spec: PermutationSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random copy orders (heads x repeat) for the spaces that grouped-query axes repeat:
    the query heads of each group reordered, one order per attention shared by its repeated
    spaces (Q's rows and O's columns). An attention with a repeated space that is not free is
    left out: its copies would keep their order while the others moved."""
    gen = torch.Generator().manual_seed(seed + 15485863)
    repeated = repeated_spaces(spec)
    by_family: dict[str, list[str]] = {}
    for space in repeated:
        group = spec.head_groups.get(space)
        by_family.setdefault(group.family if group else space, []).append(space)
    orders: dict[str, torch.Tensor] = {}
    for spaces in by_family.values():
        heads = {spec.spaces[s].size // repeated[s][1] for s in spaces}
        if any(spec.spaces[s].fixed for s in spaces) or len(heads) != 1:
            continue
        repeat = repeated[spaces[0]][0]
        order = torch.stack([_randperm(repeat, gen) for _ in range(heads.pop())])
        orders.update({s: order for s in spaces})
    return orders


def _with_family(spec: PermutationSpec, perms: dict[str, torch.Tensor],
                 space_id: str) -> dict[str, torch.Tensor]:
    """The permutation of ``space_id`` alone, or with its attention's other spaces: they share
    one head permutation, so a space of head dims is only ever permuted with its family."""
    group = spec.head_groups.get(space_id)
    if group is None or group.dim == 1:
        return {space_id: perms[space_id]}
    return {s: p for s, p in perms.items()
            if s in spec.head_groups and spec.head_groups[s].family == group.family}


def probe_batch(model: LoadedModel, batch: int) -> int:
    """The batch size the model accepts: an exported program may have a static batch axis."""
    if model.program is not None:
        for node in model.program.graph.nodes:
            val = node.meta.get("val")
            if (node.op == "placeholder" and node.name in model.program.graph_signature.user_inputs
                    and isinstance(val, torch.Tensor) and val.dim() > 0
                    and isinstance(val.shape[0], int)):
                return int(val.shape[0])
    return batch


def _outputs(out: object) -> list[torch.Tensor]:
    leaves = torch.utils._pytree.tree_leaves(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((float((x.float() - y.float()).abs().max()) for x, y in zip(a, b) if x.numel()),
               default=0.0)


def _copy_module(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own notice when copying .pt2 modules
        return copy.deepcopy(module).eval()


def _noised(state: dict[str, torch.Tensor], seed: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Zero-initialised floating tensors get small noise: with them at zero a wrong permutation
    of their axes would change nothing, and the test would pass without testing."""
    gen = torch.Generator().manual_seed(seed + 7919)
    out, keys = dict(state), []
    for key, t in state.items():
        if t.is_floating_point() and t.numel() > 1 and not bool(t.any()):
            out[key] = 0.1 * torch.randn(t.shape, generator=gen).to(t.dtype)
            keys.append(key)
    return out, keys


def _jittered(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every floating tensor scaled entry by entry by a factor in [0.5, 1.5), its zero entries
    given small positive values: weights chosen so that a permutation cannot change them (a
    constant bias, equal rows) no longer hide an axis the spec leaves out. Signs are kept (a
    running variance stays positive); a right spec holds for any weights, so it still passes."""
    gen = torch.Generator().manual_seed(seed + 104729)
    out = dict(state)
    for key, t in state.items():
        if t.is_floating_point() and t.numel() > 1:
            scale = float(t.abs().max()) if bool(t.isfinite().all()) else 1.0
            factor = 0.5 + torch.rand(t.shape, generator=gen)
            fill = (0.1 * max(scale, 1e-3)) * torch.rand(t.shape, generator=gen)
            out[key] = (t.float() * factor + (t == 0) * fill).to(t.dtype)
    return out


def _broken(state: dict[str, torch.Tensor], spec: PermutationSpec, space_id: str,
            perm: torch.Tensor, tied: dict[str, list[str]]) -> dict[str, torch.Tensor] | None:
    """The state with only the first weight axis on ``space_id`` permuted (a wrong
    permutation): the outputs must change, or the probe cannot see the space. The tensor is
    moved under each of its names (``tied``): loading writes every name into the one tensor,
    the last one winning, so moving one name alone would be undone."""
    for key, dim in spec.tensors_on(space_id):
        t = state[key]
        if not t.is_floating_point() or t.dim() < 2:
            continue
        axis = spec.axes[key][dim]
        idx = expand_index(perm, axis.block, axis.tiles, len(perm), axis.repeat, axis.span)
        moved = torch.index_select(t, dim, idx)
        if not torch.equal(moved, t):
            return {**state, **{name: moved for name in tied.get(key, [key])}}
    return None


def self_test_job(model: LoadedModel, spec: PermutationSpec, cancel: CancelToken | None = None,
                  seed: int = 0, batch: int = 8, jitter: bool = False) -> Job[SelfTestReport]:
    """Generator job behind :func:`self_test`; yields one event per space."""
    cancel = cancel or never_cancelled()
    x = model.example_input(probe_batch(model, batch), seed=seed)
    state, noised = _noised(model.state(), seed)
    if jitter:
        state = _jittered(state, seed)
    # tied weights (io/meta.py): every name of one tensor, as far as the state names it
    groups = [[k for k in names if k in state] for names in tie_groups(model.module)]
    tied = {key: names for names in groups if len(names) > 1 for key in names}
    for names in groups:  # noise and jitter are drawn per name: one tensor, one value
        for key in names:
            state[key] = state[names[-1]]
    probe = _copy_module(model.module)
    perms = random_permutations(spec, seed)
    copies = random_copy_orders(spec, seed)
    per_space: dict[str, float] = {}
    inert: list[str] = []
    powerless: list[str] = []
    with torch.no_grad():
        probe.load_state_dict(state, strict=True)
        reference = _outputs(probe(x))
        scale = max([1.0] + [float(t.float().abs().max()) for t in reference if t.numel()])
        tolerance = RELATIVE_TOLERANCE * scale

        def diff(new_state: dict[str, torch.Tensor]) -> float:
            probe.load_state_dict(new_state, strict=True)
            return _max_diff(_outputs(probe(x)), reference)

        for i, (space_id, perm) in enumerate(perms.items()):
            cancel.raise_if_cancelled()
            family = _with_family(spec, perms, space_id)
            permuted = permute_state(state, spec, family,
                                     {s: o for s, o in copies.items() if s in family})
            if all(torch.equal(permuted[k], state[k]) for k, _ in spec.tensors_on(space_id)):
                inert.append(space_id)
            per_space[space_id] = diff(permuted)
            broken = _broken(state, spec, space_id, perm, tied)
            if broken is not None and diff(broken) <= tolerance:
                powerless.append(space_id)
            yield ProgressEvent("self-test", (i + 1) / (len(perms) + 1), f"permuted {space_id}",
                                (space_id, per_space[space_id]))
        cancel.raise_if_cancelled()
        overall = diff(permute_state(state, spec, perms, copies)) if perms else 0.0
    within = overall <= tolerance and all(d <= tolerance for d in per_space.values())
    if not within:
        status = "FAILED"
    elif not perms:
        status = "nothing to permute"
    elif set(inert) | set(powerless) == set(perms):
        status = "no power"
    else:
        status = "passed"
    yield ProgressEvent("self-test", 1.0, status)
    return SelfTestReport(per_space, overall, status == "passed", list(spec.unsupported), tolerance,
                          len(perms), tuple(inert), tuple(powerless), tuple(noised), status)


def self_test(model: LoadedModel, spec: PermutationSpec, seed: int = 0,
              batch: int = 8, jitter: bool = False) -> SelfTestReport:
    """Permute every free space of ``spec`` (one at a time, then all together) and compare outputs.

    model: the model the spec was discovered from (its module is not modified).
    spec: the permutation spec to check.
    seed: seeds the probe batch and the permutations.
    batch: probe batch size (a program with a static batch axis uses its own).
    jitter: test on the weights randomly rescaled (``_jittered``) rather than as they are: for a
        spec whose weights come from someone else (a file), who could choose weights that a
        wrong spec's permutations leave unchanged; pass an unpredictable ``seed`` with it.
    Returns a SelfTestReport; ``passed`` is False when any permutation changed the outputs,
    when no space is free ("nothing to permute") or when no free space could be seen by the
    test ("no power": every free space inert or powerless).
    """
    return run_job(self_test_job(model, spec, seed=seed, batch=batch, jitter=jitter))


def _fill_value(key: str, spec: PermutationSpec, tensor: torch.Tensor) -> float:
    """Dead units: zero weights everywhere, norm scale 1 and running variance 1 (no division by 0)."""
    if key.endswith("running_var"):
        return 1.0
    layer_weights = {layer.weight for layer in spec.layers}
    norm_weights = {k for layer in spec.layers for k in layer.norm if k.endswith("weight")}
    if key in norm_weights or (tensor.dim() == 1 and key.endswith("weight") and key not in layer_weights):
        return 1.0
    return 0.0


def pad_space(state: dict[str, torch.Tensor], spec: PermutationSpec, space_id: str,
              extra: int) -> tuple[dict[str, torch.Tensor], PermutationSpec]:
    """Give space ``space_id`` ``extra`` more units, appended, that are dead.

    Every tensor axis on the space grows by ``extra * block`` entries in each of its ``tiles``
    copies: zero for weights and biases (so the new units receive nothing and send nothing), 1
    for norm scales and running variances, 0 for running means. Loaded into the same architecture made wider by ``extra`` on
    that space, the padded state computes the same function, unless a normalisation mixes over
    the space (a LayerNorm over a padded stream sees more zeros): padding such a space is not
    function-preserving.
    state: the model's state; not modified.
    Returns (new state, spec with the space's size increased).
    Raises AlignmentError for an unknown or fixed space or a negative ``extra``.
    """
    space = spec.spaces.get(space_id)
    if space is None:
        raise AlignmentError(f"{space_id}: no such permutation space")
    if space.fixed:
        raise AlignmentError(f"{space_id}: space is fixed ({space.reason}); it cannot be padded")
    group = spec.head_groups.get(space_id)
    if group is not None and group.dim > 1:
        raise AlignmentError(f"{space_id}: a space of attention head dimensions is not padded "
                             "unit by unit (its heads would be cut)")
    if extra < 0:
        raise AlignmentError(f"{space_id}: cannot pad by a negative number of units ({extra})")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for dim, axis in enumerate(spec.axes.get(key, ())):
            if axis is None or axis.space != space_id or extra == 0:
                continue
            # each of the axis's ``tiles`` copies (an LSTM's gates) gets the new units at its end
            moved = torch.movedim(tensor, dim, 0)
            tiles = max(1, axis.tiles)
            moved = moved.reshape(tiles, moved.shape[0] // tiles, *moved.shape[1:])
            shape = list(moved.shape)
            shape[1] = extra * axis.block
            pad = torch.full(shape, _fill_value(key, spec, tensor), dtype=tensor.dtype,
                             device=tensor.device)
            moved = torch.cat([moved, pad], dim=1)
            tensor = torch.movedim(moved.reshape(-1, *moved.shape[2:]), 0, dim)
        out[key] = tensor
    spaces = dict(spec.spaces)
    spaces[space_id] = replace(space, size=space.size + extra)
    groups = dict(spec.head_groups)
    if group is not None:  # heads moving as blocks: one more unit is one more head
        groups[space_id] = replace(group, heads=group.heads + extra)
    return out, PermutationSpec(spaces=spaces, axes=dict(spec.axes), layers=list(spec.layers),
                                unsupported=list(spec.unsupported), head_groups=groups)
