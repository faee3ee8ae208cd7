"""Optional activation matching (mal_method.md sec. 4): align one space by activation correlation.

When a probe batch is at hand, units of the two models that respond alike on the same inputs
correspond. The cost is the Pearson correlation of every base unit with every target unit over
the probe samples (and spatial positions, for conv feature maps); one rectangular LAP gives the
generalized permutation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..device import compute_device
from ..errors import AlignmentError
from ..graph.spec import PermutationSpec
from .generalized import Match
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
                        probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Whole-model activation matching for two models of one architecture (same ``spec``).

    Runs both models on the ``probe`` batch, records the output of every layer (forward hooks)
    and, for every free space, solves one LAP on the summed correlation of the layers writing it
    (a residual stream has several writers). Returns ``{space: permutation}`` for
    ``spec.permute_state`` applied to the target. Raises AlignmentError when a layer has no
    module to hook (an exported .pt2 program keeps no submodules).
    """
    writers: dict[str, list[str]] = {}
    for layer in spec.layers:
        space = spec.spaces.get(layer.out_axis.space)
        if space is not None and not space.fixed:
            writers.setdefault(space.id, []).append(layer.name)
    names = sorted({n for ns in writers.values() for n in ns})
    acts = {"base": _record(base, names, probe), "target": _record(target, names, probe)}
    perms: dict[str, torch.Tensor] = {}
    for space_id, layer_names in writers.items():
        cost = None
        for name in layer_names:
            b, t = acts["base"][name], acts["target"][name]
            unit_dim = 1 if b.ndim == 4 else b.ndim - 1  # conv maps: channels; else last axis
            c = activation_cost(b, t, unit_dim)
            cost = c if cost is None else cost + c
        rows, cols = solve_lap(cost)
        perms[space_id] = Match.from_lap(rows, cols, cost.shape[0], cost.shape[1]).permutation()
    return perms


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
