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
from ..graph.spec import Axis, PermutationSpec
from ..io.pt2_io import program_batch_size
from .generalized import Match
from .heads import head_families, solve_family
from .lap import solve_lap


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
                        probe: torch.Tensor, program: Any = None) -> dict[str, torch.Tensor]:
    """Whole-model activation matching for two models of one architecture (same ``spec``).

    Runs both models on the ``probe`` batch, records the output of every layer and, for every
    free space, solves one LAP on the summed correlation of the layers writing it (a residual
    stream has several writers). A layer whose output holds its space in blocks or tiles (heads,
    gates) is read unit by unit, every other entry counting as a sample. The spaces of one
    attention (Q with K, V with O) are solved together, keeping heads whole (align/heads.py).
    program: the architecture's ``torch.export`` program; when given, the layers' outputs are
        read by interpreting its graph with each model's weights (this works for .pt2 programs,
        whose modules have no submodules to hook); otherwise forward hooks record them.
    Returns ``{space: permutation}`` for ``spec.permute_state`` applied to the target. Raises
    AlignmentError when a layer's output cannot be found.
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
    perms: dict[str, torch.Tensor] = {}
    costs: dict[str, torch.Tensor] = {}
    for space_id, layer_names in writers.items():
        cost = None
        for name in layer_names:
            layer = spec.layer(name)
            units = spec.spaces[space_id].size
            b = _unit_samples(acts["base"][name], layer.kind, layer.out_axis, units)
            t = _unit_samples(acts["target"][name], layer.kind, layer.out_axis, units)
            c = activation_cost(b, t, 1)
            cost = c if cost is None else cost + c
        costs[space_id] = cost
    free = sorted(s.id for s in spec.free_spaces())
    families = head_families(spec, spec, {s: s for s in free}, free)
    for family in {id(f): f for f in families.values()}.values():
        # the spaces of one attention: heads whole, one head map; a space no layer writes (the
        # output projection's input) follows the spaces sharing its within-head permutations
        found = solve_family([costs.get(s, torch.zeros(spec.spaces[s].size, spec.spaces[s].size))
                              for s in family.spaces], family)
        perms.update({s: m.permutation() for s, m in zip(family.spaces, found)})
    for space_id, cost in costs.items():
        if space_id in families:
            continue
        rows, cols = solve_lap(cost)
        perms[space_id] = Match.from_lap(rows, cols, cost.shape[0], cost.shape[1]).permutation()
    return perms


def _unit_samples(acts: torch.Tensor, kind: str, axis: Axis, units: int) -> torch.Tensor:
    """(samples, units): the layer output's unit axis (channels for conv, else the last one),
    each unit's block and tile entries counted as samples."""
    dim = 1 if kind.startswith("conv") and acts.ndim > 2 else acts.ndim - 1
    x = torch.movedim(acts, dim, -1)
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
