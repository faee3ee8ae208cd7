"""Permutation spaces: which tensor axes move together when hidden units are permuted.

A *space* is a set of interchangeable units (the hidden neurons of an MLP layer, the channels of a
conv layer, a residual stream). Every axis of every state tensor (parameters and buffers) either
belongs to one space or is not permutable (kernel spatial axes, the network's input features).
A space is *fixed* when its units must not move: it touches the network input or output, or an
operation we cannot reason about (named in ``Space.reason``).

An axis can own ``block`` consecutive entries per unit: after ``flatten`` of a C x H x W feature
map, channel c owns features [c*H*W, (c+1)*H*W). An axis can also hold ``tiles`` copies of that
layout one after the other: an LSTM's input weight stacks its four gates (tiles 4, each hidden
unit owns one row per gate), a position-major flatten (H x C x W -> H*C*W) repeats the channel
layout once per row (tiles H, block W). Entry e of such an axis belongs to unit
``(e % (units * block)) // block``. Grouped-query attention adds a third form: the units come in
heads of ``span`` units and each head's entries appear ``repeat`` times in a row (the output
projection reads a key/value head's value dims once per query head of its group), so entry
(c * repeat + k) * span * block + u * block + b of a tile belongs to unit c * span + u. Copy k of
head c is query head c * repeat + k: the query heads of one group may be reordered among
themselves (a *copy order* per head, shared by every repeated axis of the attention: Q's rows
and O's columns), on top of any permutation of the space.

Attention heads: a space may hold the units of ``heads`` heads of ``dim`` units each, head h
owning units [h*dim, (h+1)*dim) (``HeadGroup``). Its allowed permutations keep heads whole: a
permutation of the heads and, inside each head, a permutation of its dims (unless the dims are
pinned: rotary embeddings pair them). Spaces of one attention (Q with K, V with O) form a
*family* that shares the head permutation; each has its own within-head permutations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch


@dataclass(frozen=True)
class Axis:
    """A tensor axis that belongs to permutation space ``space``.

    Each unit owns ``block`` consecutive entries; the axis holds ``tiles`` copies of the
    space's layout back to back (units * block entries each), so its size is
    tiles * units * block * repeat. ``repeat`` > 1: the units form groups of ``span`` (the
    dims of one attention head), each group's entries written ``repeat`` times in a row.
    """

    space: str
    block: int = 1
    tiles: int = 1
    repeat: int = 1
    span: int = 1

    @property
    def layout(self) -> tuple[int, ...]:
        """(block, tiles), or (block, tiles, repeat, span) for a repeated axis: the layout the
        align layer's tensor functions take (``align.generalized.Layout``)."""
        if self.repeat > 1:
            return self.block, self.tiles, self.repeat, self.span
        return self.block, self.tiles

    @property
    def entries(self) -> int:
        """Entries of the axis per unit of its space."""
        return self.block * self.tiles * self.repeat


@dataclass(frozen=True)
class Space:
    """One permutation space: ``size`` units; ``fixed`` ones must keep the identity."""

    id: str
    size: int
    fixed: bool = False
    reason: str = ""  # why fixed: "network input", "class output", "unsupported op aten.foo"


@dataclass(frozen=True)
class HeadGroup:
    """A space whose units are attention heads' dimensions (see the module docstring).

    family: spaces with the same family move their heads together (one head permutation).
    heads: number of heads; dim: units per head on this space (1 when the heads move as
        blocks, the dims being a block of each unit).
    parts: the space is ``len(parts)`` consecutive segments of heads * dim units (one fused
        projection writing q, k and v has three); per segment (inner, why): segments and spaces
        with the same ``inner`` id share the within-head permutations of every head (Q with K,
        V with O's input); ``why`` says why the dims keep their order ("" when they may move).
    inner_reason: for heads moving as blocks, why their dims do not move.
    """

    family: str
    heads: int
    dim: int
    parts: tuple[tuple[str, str], ...] = ()
    inner_reason: str = ""

    @property
    def inner_free(self) -> bool:
        return self.dim > 1 and any(not why for _, why in self.parts)


@dataclass(frozen=True)
class Layer:
    """A weight-carrying layer (linear or conv) and the parameters that ride along with it.

    name: module path ("layers.1", "features.3"); weight/bias: state keys; norm: state keys of
    the normalisation applied directly to this layer's output (BatchNorm weight, bias, running
    mean/var; LayerNorm weight, bias), which follow the layer's output map.
    out_axis/in_axis: spaces of the weight's axes 0 and 1; index: execution order.
    kernel: spatial kernel size for conv layers (() for linear).
    transposed: the weight is stored (in, out) (GPT-2's Conv1D): out_axis is its axis 1 and
    in_axis its axis 0.
    """

    name: str
    kind: str  # "linear" | "conv2d"
    weight: str
    bias: str | None
    norm: tuple[str, ...]
    out_axis: Axis
    in_axis: Axis
    index: int
    kernel: tuple[int, ...] = ()
    transposed: bool = False


@dataclass
class PermutationSpec:
    """Spaces of a model plus, per state tensor, the space of each axis (None = not permutable)."""

    spaces: dict[str, Space]
    axes: dict[str, tuple[Axis | None, ...]]
    layers: list[Layer] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # op names that forced spaces fixed
    head_groups: dict[str, HeadGroup] = field(default_factory=dict)  # space -> its heads

    def free_spaces(self) -> list[Space]:
        return [s for s in self.spaces.values() if not s.fixed]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def module_tensors(self, module: str) -> list[str]:
        """State keys of module ``module``'s own tensors (``<module>.<name>``, not its
        children's), in state order."""
        return [key for key in self.axes if key.rpartition(".")[0] == module]

    def tensors_on(self, space_id: str) -> list[tuple[str, int]]:
        """(state key, axis) pairs that belong to ``space_id``."""
        return [
            (key, dim)
            for key, axes in self.axes.items()
            for dim, axis in enumerate(axes)
            if axis is not None and axis.space == space_id
        ]


def expand_index(index: torch.Tensor, block: int, tiles: int = 1, units: int = 0,
                 repeat: int = 1, span: int = 1,
                 copy_order: torch.Tensor | None = None) -> torch.Tensor:
    """Unit indices -> entry indices when each unit owns ``block`` consecutive entries and the
    axis repeats a layout of ``units`` units ``tiles`` times (``units`` is needed when tiles > 1).

    repeat > 1 (see ``Axis``): the listed units are taken ``span`` at a time (a head's dims) and
    each group's entries listed ``repeat`` times, copy k of a unit u at
    ((u // span) * repeat + k) * span + u % span (times ``block``); a full list of slots in order
    thus gives the axis's entries in order, and two lists of equal length pair their entries
    copy by copy. A list whose length is not a multiple of ``span`` lists copy by copy.
    ``copy_order`` (listed groups x repeat): in place k of listed group g, copy
    ``copy_order[g, k]`` of its units is listed instead of copy k (the query heads of a group
    reordered); the list's length must then be a multiple of ``span``.
    """
    if repeat > 1:
        index = index.long()
        k = torch.arange(repeat, device=index.device)[:, None]  # (repeat, 1)
        if copy_order is not None:
            groups = torch.arange(len(index), device=index.device) // span
            k = copy_order.to(index.device).long()[groups].T  # (repeat, listed)
        copies = ((index // span) * repeat)[None, :] * span + (index % span)[None, :] \
            + k * span  # (repeat, listed)
        if len(index) % span == 0:
            copies = copies.reshape(repeat, -1, span).transpose(0, 1)  # (groups, repeat, span)
        index = copies.reshape(-1)
        units *= repeat
    if block > 1:
        offsets = torch.arange(block, device=index.device)
        index = (index[:, None] * block + offsets[None, :]).reshape(-1)
    if tiles > 1:
        starts = torch.arange(tiles, device=index.device) * (units * block)
        index = (starts[:, None] + index[None, :]).reshape(-1)
    return index


def permute_state(
    state: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    perms: Mapping[str, torch.Tensor],
    copy_orders: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Apply square permutations ``perms[space] = p`` (new unit i is old unit p[i]) to a state.

    ``copy_orders[space]`` (heads x repeat), for a space that grouped-query axes repeat: copy k
    of new head h is copy ``copy_orders[space][h, k]`` of the old head it takes (the query
    heads of a group reordered; see the module docstring). Spaces missing from ``perms`` keep
    the identity, their copies too unless ``copy_orders`` names them. Returns a new dict;
    inputs are untouched.
    """
    copy_orders = copy_orders or {}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        axes = spec.axes.get(key, ())
        for dim, axis in enumerate(axes):
            if axis is None:
                continue
            order = copy_orders.get(axis.space) if axis.repeat > 1 else None
            if axis.space not in perms and order is None:
                continue
            perm = perms[axis.space].to(tensor.device) if axis.space in perms \
                else torch.arange(spec.spaces[axis.space].size, device=tensor.device)
            idx = expand_index(perm, axis.block, axis.tiles, len(perm), axis.repeat, axis.span,
                               order)
            tensor = torch.index_select(tensor, dim, idx)
        out[key] = tensor
    return out


def repeated_spaces(spec: PermutationSpec) -> dict[str, tuple[int, int]]:
    """Space -> (repeat, span) for every space that a grouped-query axis repeats (its heads'
    copies may be reordered: see the module docstring)."""
    out: dict[str, tuple[int, int]] = {}
    for axes in spec.axes.values():
        for axis in axes:
            if axis is not None and axis.repeat > 1:
                out[axis.space] = (axis.repeat, axis.span)
    return out


def compose_head_permutation(head_perm: torch.Tensor, inner: list[torch.Tensor] | None,
                             dim: int) -> torch.Tensor:
    """The unit permutation of a head-grouped space: new head h is old head ``head_perm[h]``,
    its dim r old dim ``inner[h][r]`` of that head (``inner`` None: dims keep their order)."""
    offsets = torch.arange(dim).expand(len(head_perm), dim) if inner is None \
        else torch.stack([p.long() for p in inner]) if len(inner) else torch.zeros(0, dim)
    return (head_perm.long()[:, None] * dim + offsets.long()).reshape(-1)


def head_permutation_of(perm: torch.Tensor, dim: int) -> torch.Tensor | None:
    """The head permutation inside a unit permutation of a head-grouped space, or None when
    ``perm`` splits a head (some head's dims come from several heads)."""
    if len(perm) % dim:
        return None
    src = perm.long().reshape(-1, dim) // dim
    if not bool((src == src[:, :1]).all()):
        return None
    return src[:, 0]


def head_blocks(spec: PermutationSpec, axis: Axis) -> tuple[int, int]:
    """(dims per head, segments) of the space under ``axis`` when its units are attention head
    dims; (1, 1) otherwise. Seen with heads as units (the dims a block, a fused projection's
    segments tiles), the axis has layout (axis.block * dims, axis.tiles * segments): how layer
    steps' local alignment and their rule book see it."""
    group = spec.head_groups.get(axis.space)
    if group is None or group.dim == 1:
        return 1, 1
    return group.dim, max(1, len(group.parts))
