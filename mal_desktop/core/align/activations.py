"""Optional activation matching (mal_method.md sec. 4): align one space by activation correlation.

When a probe batch is at hand, units of the two models that respond alike on the same inputs
correspond. The cost is the Pearson correlation of every base unit with every target unit over
the probe samples (and spatial positions, for conv feature maps); one rectangular LAP gives the
generalized permutation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..device import compute_device
from ..errors import AlignmentError
from ..graph.recurrent import RECURRENT_KINDS
from ..graph.spec import (Axis, Layer, PermutationSpec, expand_index, head_permutation_of,
                          repeated_spaces)
from ..io.pt2_io import program_batch_size
from .copies import best_orders, head_pairs
from .generalized import Match
from .heads import head_families, solve_family
from .lap import solve_lap

# Rounds of (solve an attention's heads and dims, reorder its query heads in their groups).
COPY_ROUNDS = 4


def _units_last(acts: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """(N, ..., units, ...) -> (samples, units): every other axis counts as a sample."""
    if acts.ndim < 2:
        raise AlignmentError(
            f"activations need a sample and a unit axis, got shape {tuple(acts.shape)}")
    return torch.movedim(acts, unit_dim, -1).reshape(-1, acts.shape[unit_dim])


def activation_cost(base_acts: torch.Tensor, target_acts: torch.Tensor, unit_dim: int = 1,
                    eps: float = 1e-8) -> torch.Tensor:
    """Correlation between base and target units on the same probe batch.

    Parameters:
        base_acts: (N, m) activations, or (N, m, H, W) feature maps with ``unit_dim`` = 1.
        target_acts: (N, n) or (N, n, H, W) on the same inputs (same N and spatial size).
        unit_dim: the axis holding the units.
        eps: guards units that never vary (their correlation is 0).
    Returns:
        (m x n) float64 correlation matrix on the compute device.
    Raises:
        AlignmentError: the two batches do not line up.
    """
    b = _units_last(base_acts, unit_dim)
    t = _units_last(target_acts, unit_dim)
    if b.shape[0] != t.shape[0]:
        raise AlignmentError(f"activations of different batches: base {tuple(base_acts.shape)}, "
                             f"target {tuple(target_acts.shape)}")
    device = compute_device()
    dtype = torch.float32 if device.type == "mps" else torch.float64
    b = b.detach().to(device, dtype)
    t = t.detach().to(device, dtype)
    b = b - b.mean(0, keepdim=True)
    t = t - t.mean(0, keepdim=True)
    b = b / (b.norm(dim=0, keepdim=True) + eps)
    t = t / (t.norm(dim=0, keepdim=True) + eps)
    return b.T @ t


def match_by_activations(base_acts: torch.Tensor, target_acts: torch.Tensor,
                         unit_dim: int = 1) -> Match:
    """Align one space by activations: the generalized permutation maximising total correlation.

    Parameters and raises as :func:`activation_cost`. Returns a :class:`Match` base <- target.
    """
    cost = activation_cost(base_acts, target_acts, unit_dim)
    rows, cols = solve_lap(cost)
    return Match.from_lap(rows, cols, cost.shape[0], cost.shape[1])


def activation_matching(base: nn.Module, target: nn.Module, spec: PermutationSpec,
                        probe: torch.Tensor, program: Any = None
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Whole-model activation matching for two models of one architecture (same ``spec``).

    Runs both models on the ``probe`` batch, records the output of every layer and, for every
    free space, solves one LAP on the summed correlation of the layers writing it (a residual
    stream has several writers). A layer whose output holds its space in blocks or tiles (heads,
    gates) is read unit by unit, every other entry counting as a sample. The spaces of one
    attention (Q with K, V with O) are solved together, keeping heads whole (align/heads.py).
    Under grouped-query attention the query heads of each group are reordered too: given the
    heads' and dims' match, one LAP per head pair on the correlation of the query projection's
    copies; the attention is then solved again with the target's copies in that order, until
    the orders settle (at most ``COPY_ROUNDS`` times).
    program: the architecture's ``torch.export`` program; when given, the layers' outputs are
        read by interpreting its graph with each model's weights (this works for .pt2 programs,
        whose modules have no submodules to hook); otherwise forward hooks record them.
    Returns ``({space: permutation}, {space: copy orders})`` for ``spec.permute_state`` applied
    to the target. Raises AlignmentError when a layer's output cannot be found.
    """
    writers: dict[str, list[str]] = {}
    for layer in spec.layers:
        space = spec.spaces.get(layer.out_axis.space)
        # a recurrent layer's output is a tuple (sequence, states): not read here
        if space is not None and not space.fixed and layer.kind not in RECURRENT_KINDS:
            writers.setdefault(space.id, []).append(layer.name)
    names = sorted({n for ns in writers.values() for n in ns})
    if program is not None:
        acts = {"base": _record_graph(program, base, spec, names, probe),
                "target": _record_graph(program, target, spec, names, probe)}
    else:
        acts = {"base": _record(base, names, probe), "target": _record(target, names, probe)}

    def space_cost(space_id: str, target_acts: dict[str, torch.Tensor]) -> torch.Tensor:
        cost = None
        for name in writers[space_id]:
            layer = spec.layer(name)
            units = spec.spaces[space_id].size
            b = _unit_samples(acts["base"][name], layer.kind, layer.out_axis, units)
            t = _unit_samples(target_acts[name], layer.kind, layer.out_axis, units)
            c = activation_cost(b, t, 1)
            cost = c if cost is None else cost + c
        return cost

    costs = {space_id: space_cost(space_id, acts["target"]) for space_id in writers}
    perms: dict[str, torch.Tensor] = {}
    copy_orders: dict[str, torch.Tensor] = {}
    free = sorted(s.id for s in spec.free_spaces())
    families = head_families(spec, spec, {s: s for s in free}, free)
    repeated_all = repeated_spaces(spec)
    for family in {id(f): f for f in families.values()}.values():
        # the spaces of one attention: heads whole, one head map; a space no layer writes (the
        # output projection's input) follows the spaces sharing its within-head permutations
        repeated = [spec.layer(n) for s in family.spaces for n in writers.get(s, ())
                    if spec.layer(n).out_axis.repeat > 1]
        target_acts = dict(acts["target"])
        orders = torch.arange(repeated[0].out_axis.repeat).repeat(family.target_heads, 1) \
            if repeated else None
        for round_ in range(COPY_ROUNDS if repeated else 1):
            family_costs = [costs.get(s, torch.zeros(spec.spaces[s].size, spec.spaces[s].size))
                            for s in family.spaces]
            found = solve_family(family_costs, family)
            if not repeated or round_ == COPY_ROUNDS - 1:  # the last round only solves
                break
            match = found[family.spaces.index(repeated[0].out_axis.space)]
            step = _copy_step([(acts["base"][lay.name], target_acts[lay.name], lay)
                               for lay in repeated], match, family.base_heads)
            if not step:
                break
            for j, o in step.items():
                orders[j] = orders[j][o]
            for lay in repeated:  # the target's copies in the new order, from the recording
                target_acts[lay.name] = _reordered(acts["target"][lay.name], lay, orders)
            costs.update({s: space_cost(s, target_acts) for s in family.spaces if s in writers})
        perms.update({s: m.permutation() for s, m in zip(family.spaces, found)})
        if orders is not None and not bool((orders == torch.arange(orders.shape[1])).all()):
            span = repeated[0].out_axis.span
            match = found[family.spaces.index(repeated[0].out_axis.space)]
            heads = head_permutation_of(match.permutation(), span)  # new head -> old
            copy_orders.update({s: orders[heads] for s in family.spaces if s in repeated_all})
    for space_id, cost in costs.items():
        if space_id in families:
            continue
        rows, cols = solve_lap(cost)
        perms[space_id] = Match.from_lap(rows, cols, cost.shape[0], cost.shape[1]).permutation()
    return perms, copy_orders


def _copy_samples(acts: torch.Tensor, layer: Layer, heads: int) -> torch.Tensor:
    """(samples, heads, repeat, dims) of a grouped-query layer's output, standardised per
    column: each query head's dims one by one, tiles and block entries counted as samples."""
    axis = layer.out_axis
    x = torch.movedim(acts.detach().double(), _unit_axis(acts, layer.kind), -1)
    x = x.reshape(-1, axis.tiles, heads, axis.repeat, axis.span, axis.block)
    x = x.permute(0, 1, 5, 2, 3, 4).reshape(-1, heads, axis.repeat, axis.span)
    x = x - x.mean(0, keepdim=True)
    return x / (x.norm(dim=0, keepdim=True) + 1e-8)


def _copy_step(recorded: list[tuple[torch.Tensor, torch.Tensor, Layer]], match: Match,
               heads: int) -> dict[int, torch.Tensor]:
    """Target head -> the reorder of its copies that best correlates with its base head's,
    given the heads' and dims' ``match`` (square); only heads whose copies move."""
    span = recorded[0][2].out_axis.span
    cols = match.permutation()
    score = None
    for base_acts, target_acts, layer in recorded:
        b = _copy_samples(base_acts, layer, heads)
        t = _copy_samples(target_acts, layer, heads)
        # the target's units in the base's order (dims mapped), each copy apart
        t = t.permute(0, 2, 1, 3).reshape(len(t), layer.out_axis.repeat, -1)[:, :, cols]
        t = t.reshape(len(t), layer.out_axis.repeat, heads, span).permute(0, 2, 1, 3)
        s = torch.einsum("sikd,sild->ikl", b, t)
        score = s if score is None else score + s
    return best_orders(score, head_pairs(match, span))


def _reordered(acts: torch.Tensor, layer: Layer, orders: torch.Tensor) -> torch.Tensor:
    """A grouped-query layer's recorded output with each head's copies in ``orders``."""
    axis = layer.out_axis
    units = orders.shape[0] * axis.span
    index = expand_index(torch.arange(units), axis.block, axis.tiles, units, axis.repeat,
                         axis.span, orders)
    return torch.index_select(acts, _unit_axis(acts, layer.kind), index.to(acts.device))


def _unit_axis(acts: torch.Tensor, kind: str) -> int:
    """The axis of a layer's output that holds its units: channels for conv, else the last."""
    return 1 if kind.startswith("conv") and acts.ndim > 2 else acts.ndim - 1


def _unit_samples(acts: torch.Tensor, kind: str, axis: Axis, units: int) -> torch.Tensor:
    """(samples, units): the layer output's unit axis (channels for conv, else the last one),
    each unit's block and tile entries counted as samples."""
    x = torch.movedim(acts, _unit_axis(acts, kind), -1)
    lead = x.shape[:-1]
    # a unit c * span + u owns entries (tile, c, copy k, u, block b): keep (c, u) together
    span = axis.span if axis.repeat > 1 else 1
    x = x.reshape(*lead, axis.tiles, units // span, axis.repeat, span, axis.block)
    x = torch.movedim(x, (-4, -2), (-2, -1))  # (..., tiles, copy, block, c, u)
    return x.reshape(-1, units)


def _weight_users(program: Any, spec: PermutationSpec, names: list[str]) -> dict[Any, str]:
    """Graph node computing each named layer's output: the first linear, conv or matrix
    product that reads the layer's weight (through transposes and views)."""
    by_key = {spec.layer(n).weight: n for n in names}
    found: dict[Any, str] = {}
    for node in program.graph.nodes:
        if node.op != "placeholder":
            continue
        key = None
        for s in program.graph_signature.input_specs:
            if getattr(s.arg, "name", None) == node.name:
                key = s.target
        if key not in by_key:
            continue
        frontier = [node]
        while frontier:
            current = frontier.pop(0)
            for user in current.users:
                op = str(user.target).split(".")[1] if str(user.target).startswith("aten.") else ""
                if op in _LAYER_OPS:
                    found.setdefault(user, by_key[key])
                    frontier = []
                    break
                if op in _CARRY_OPS:
                    frontier.append(user)
    return found


_LAYER_OPS = {"linear", "conv1d", "conv2d", "conv3d", "convolution", "_convolution", "addmm", "mm",
              "bmm", "matmul", "conv_transpose1d", "conv_transpose2d"}
_CARRY_OPS = {"t", "transpose", "permute", "expand", "view", "reshape", "_unsafe_view", "clone",
              "contiguous", "alias", "detach", "_to_copy", "to"}


def _record_graph(program: Any, module: nn.Module, spec: PermutationSpec, names: list[str],
                  probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the named layers, by interpreting the program's graph with ``module``'s
    weights (matched by state key) and the probe as its input."""
    wanted = _weight_users(program, spec, names)
    missing = set(names) - set(wanted.values())
    if missing:
        raise AlignmentError(f"activation matching cannot find the output of layer "
                             f"{sorted(missing)[0]!r} in the program (use weight matching)")
    state = module.state_dict()
    args: list[Any] = []
    for s in program.graph_signature.input_specs:
        kind = s.kind.name
        if kind in ("PARAMETER", "BUFFER"):
            args.append(state[s.target] if s.target in state else program.state_dict[s.target])
        elif kind in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
            args.append(program.constants[s.target])
        else:
            args.append(probe)
    parts: dict[str, list[torch.Tensor]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            value = super().run_node(n)
            if n in wanted and isinstance(value, torch.Tensor):
                parts.setdefault(wanted[n], []).append(value.detach())
            return value

    # a program exported with a fixed batch size runs only on batches of that size
    fixed = program_batch_size(program)
    if fixed is None:
        chunks = [probe]
    elif len(probe) >= fixed:
        chunks = [probe[i:i + fixed] for i in range(0, len(probe) - fixed + 1, fixed)]
    else:
        chunks = [probe.repeat((fixed + len(probe) - 1) // len(probe),
                               *([1] * (probe.dim() - 1)))[:fixed]]
    user = next((i for i, a in enumerate(args) if a is probe), None)  # `is`: tensors compare
    with torch.no_grad():
        for chunk in chunks:
            if user is not None:
                args[user] = chunk
            Recorder(program.graph_module).run(*args)
    return {name: torch.cat(values) for name, values in parts.items()}


def _record(module: nn.Module, names: list[str], probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the named submodules of ``module`` on ``probe``."""
    out: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            try:
                sub = module.get_submodule(name)
            except AttributeError:
                raise AlignmentError(f"activation matching needs the module {name!r}; this model "
                                     "has none to observe (use weight matching)") from None
            handles.append(sub.register_forward_hook(
                lambda _m, _i, o, name=name: out.__setitem__(name, o.detach())))
        with torch.no_grad():
            module(probe)
    finally:
        for h in handles:
            h.remove()
    return out
