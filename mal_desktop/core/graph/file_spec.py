"""A permutation spec carried inside a mal model file, so that opening the file on another
machine (or with an empty spec cache) needs no export.

Discovery exports a model it cannot record (record.py refuses some forwards), and the first
export in a process imports torch's compiler stack: 1-1.5 s on an idle machine, several seconds
under load. A stored spec spares that export. A model that can be recorded is recorded instead
(``discover_spec``): one forward pass costs less than this check's self-test. ``save_model``
therefore stores the spec it was given (the zoo builder and merges give one) with the spec
cache's key (``spec_cache.spec_key``: the architecture, the state's structure, the probe, the
discovery code and torch version).

A file is untrusted input, so its spec is a claim to check, never an instruction: it is used
only when its key is the key of the model as loaded now (same code, same architecture), it fits
the model's tensors (every axis, layer and head group), and the self-test passes (permuting each
free space leaves the outputs unchanged) on the file's weights rescaled at random with a seed
nobody can predict: the file's author chooses its weights, and weights such as a constant bias
would hide an axis a forged spec leaves out. The self-test needs the weights and runs the model
about twice per space, so models above ``MAX_PARAMETERS`` are discovered on the meta device
instead (that costs no weights). Anything else - another version, a mismatch, a failed test -
falls back to discovery silently: the spec is a cache, never required. A verified spec is used
for its own file and not written to the user cache (which answers for every model of the
architecture): whatever the checks miss stays with the file that brought it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import torch

from ..io.model import LoadedModel
from .selftest import self_test
from .spec import PermutationSpec
from .spec_cache import spec_from_json, spec_key, spec_to_json

# above this, running the model on its weights - a self-test (a deep copy and ~2 forward passes
# per space) or a recording (one pass, every weight read) - costs more than exporting a
# weightless twin of the module
MAX_PARAMETERS = 50_000_000


def runs_cheaply(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether running the model whose weights these are is cheap enough to check or trace it
    by running it: every tensor in memory (none on the meta device), ``MAX_PARAMETERS`` at
    most."""
    total = 0
    for t in tensors:
        if t.is_meta:
            return False
        total += t.numel()
    return total <= MAX_PARAMETERS


def spec_record(model: LoadedModel, spec: PermutationSpec) -> dict[str, Any] | None:
    """What ``save_model(..., spec=...)`` stores for ``model``; None when the model has no
    cache key (made in memory), so there is nothing to check a stored spec against."""
    key = spec_key(model)
    return None if key is None else {"key": key, "spec": spec_to_json(spec)}


def verified_file_spec(model: LoadedModel, key: str | None) -> PermutationSpec | None:
    """The spec ``model``'s file carries, when it is this model's (``key``), fits its tensors
    and passes the self-test; None otherwise (then the caller discovers it)."""
    record = model.stored_spec
    if key is None or not isinstance(record, dict) or record.get("key") != key:
        return None
    state = model.state()
    if not runs_cheaply(state.values()):
        return None
    try:
        spec = spec_from_json(record["spec"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError):
        return None  # OverflowError: int() of 1e999, which JSON readers take for inf
    if not _fits(spec, state):
        return None
    try:
        # the file's author chose its weights (and would know a fixed seed's permutations):
        # test on randomly rescaled weights, with permutations nobody can predict
        passed = self_test(model, spec, seed=secrets.randbelow(2**31), jitter=True).passed
    except Exception:  # noqa: BLE001 - a spec the tensors contradict; discovery decides
        return None
    return spec if passed else None


def _fits(spec: PermutationSpec, state: dict[str, Any]) -> bool:
    """Every state tensor has one axis entry per dimension, on a known space whose units and
    layout fill that dimension exactly; layers name known keys and spaces; head groups fill
    their spaces."""
    if set(spec.axes) != set(state):
        return False
    for key, axes in spec.axes.items():
        shape = tuple(state[key].shape)
        if len(axes) != len(shape):
            return False
        for axis, size in zip(axes, shape):
            if axis is None:
                continue
            space = spec.spaces.get(axis.space)
            if space is None or min(axis.block, axis.tiles, axis.repeat, axis.span) < 1 \
                    or space.size * axis.entries != size:
                return False
    return all(_layer_fits(spec, layer, state) for layer in spec.layers) and \
        all(_group_fits(spec, space, group) for space, group in spec.head_groups.items())


def _layer_fits(spec: PermutationSpec, layer: Any, state: dict[str, Any]) -> bool:
    """A layer is its weight: out and in axes are the weight's (swapped when transposed), the
    kernel its trailing sizes, bias and norm tensors ride on its out space. Layer steps merge
    these tensors along these axes, and the self-test never reads the layers list."""
    keys = [layer.weight, layer.bias, *layer.norm]
    if any(k is not None and k not in state for k in keys):
        return False
    axes = spec.axes[layer.weight]
    if len(axes) < 2:
        return False
    out_axis, in_axis = (axes[1], axes[0]) if layer.transposed else (axes[0], axes[1])
    if (layer.out_axis, layer.in_axis) != (out_axis, in_axis) \
            or tuple(layer.kernel) != tuple(state[layer.weight].shape[2:]):
        return False
    for key in [layer.bias, *layer.norm]:
        if key is None:
            continue
        riding = spec.axes[key]
        if len(riding) != 1 or riding[0] is None or riding[0].space != layer.out_axis.space:
            return False
    return True


def _group_fits(spec: PermutationSpec, space_id: str, group: Any) -> bool:
    """A head group fills its space exactly: ``len(parts)`` segments of heads * dim units (dims
    inside heads), or one unit per head (heads moving as blocks). The self-test draws one
    permutation per head before it can fail, so a group's sizes must be bounded here."""
    space = spec.spaces.get(space_id)
    if space is None or group.heads < 1 or group.dim < 1:
        return False
    if group.dim == 1:
        return group.heads == space.size
    return len(group.parts) >= 1 and group.heads * group.dim * len(group.parts) == space.size
