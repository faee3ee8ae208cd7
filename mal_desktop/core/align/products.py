"""Cost products of coordinate descent (descent.py): built in the cost dtype, reused between
visits, and an objective J summed in float64.

For a space s the LAP cost is a sum of per-tensor products B_s T_s^T, where B_s is the base
tensor unfolded along its axis on s and T_s the target tensor, its other axes mapped by their
current matches, unfolded the same way (mal_method.md sec. 4). Three things make this cheaper
than rebuilding every product from float64 tensors at every visit (issue 12):

- Products are computed in float32 (twice as fast as float64 matmul on CPU, and the gathers
  that map the target's other axes move half the bytes). The LAP on a float32 cost can only
  differ from the float64 one where two assignments are within float32 rounding of each other;
  whether a new match is *kept* is still decided on J summed in float64 (:func:`dot64`), so
  J never decreases whatever the cost's rounding.
- A space's products are grouped by the other free spaces they read (its "dependencies"); a
  group is kept and reused while none of those spaces' matches changed (the products that read
  only fixed spaces, such as the first layer's weight against the network input, once for the
  whole job, random restarts included).
- When the one space a group reads has moved only some of its units, the group is updated
  instead of rebuilt: the product changes only in the entries of the base slots whose target
  unit changed, so C += B[:, S] (T_new[:, S] - T_old[:, S])^T costs |S| / m of a rebuild. After
  the first sweeps a move changes a few percent of the units. The update's rounding differs
  from a rebuild's; a group is rebuilt after ``MAX_UPDATES`` updates, so it never drifts far.
- Base tensors unfolded along an axis by a copy (a conv's input axis, a linear layer after
  ``flatten``) are unfolded once.

The reused products take memory: at most the bytes of the paired working tensors (base and
target together), first-come in a fixed order; what does not fit is recomputed at each visit.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..graph.spec import expand_index
from .generalized import Layout, Match, split_layout

# A group of products is reused only when it reads at least this many entries per unit: below
# it (biases, norm weights) recomputing costs about what adding the stored copy would.
MIN_REUSED_ENTRIES_PER_UNIT = 16

# A group is updated in place when at most this fraction of its dependency's slots changed
# (the update then costs at most 2x that fraction of a rebuild: two gathers of the changed
# slots), and rebuilt after this many updates in a row.
MAX_UPDATED_FRACTION = 0.25
MAX_UPDATES = 8

# Elements per chunk of the float64 inner products: bounds their float64 temporaries (32 MiB).
_DOT_CHUNK = 1 << 22

_AxisInfo = tuple[str | None, Layout]  # per tensor axis: (base space or None, layout)


@dataclass
class PairedTensor:
    """One paired tensor on the compute device, in the cost dtype: per axis (base space or
    None, layout)."""

    base_key: str
    base: torch.Tensor
    target: torch.Tensor
    axes: tuple[_AxisInfo, ...]


def unfold(x: torch.Tensor, dim: int, layout: Layout) -> torch.Tensor:
    """``x`` as a (units x entries) matrix along axis ``dim``: row i holds every entry of unit i
    (its ``block`` entries in each tile, times all entries of the other axes)."""
    block, tiles = split_layout(layout)
    moved = torch.movedim(x, dim, 0)
    units = moved.shape[0] // (block * tiles)
    if tiles == 1:
        return moved.reshape(units, -1)
    return moved.reshape(tiles, units, -1).transpose(0, 1).reshape(units, -1)


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> summed in float64 from float64 products.

    The product of two float32 (or bf16 / fp16) numbers is exact in float64 (24 + 24 < 53
    mantissa bits), so the only rounding is that of the float64 sum, the error that
    ``lap.J_IMPROVEMENT_RTOL`` is sized for. A float32 sum would be off by about 1e-7 of J, far
    above that margin: a J that looks higher could be lower.
    """
    a, b = a.reshape(-1), b.reshape(-1)
    if a.device.type == "mps":  # no float64 there
        a, b = a.cpu(), b.cpu()
    total = 0.0
    for start in range(0, a.numel(), _DOT_CHUNK):
        stop = start + _DOT_CHUNK
        total += float(torch.dot(a[start:stop].to(torch.float64),
                                 b[start:stop].to(torch.float64)).item())
    return total


def _take(t: torch.Tensor, axis: int, units: Sequence[int], layout: Layout) -> torch.Tensor:
    """The entries of ``units`` along ``axis`` (each unit's block in every tile), in that
    order; a unit -1 reads zeros (a padded base slot)."""
    block, tiles = split_layout(layout)
    size = t.shape[axis] // (block * tiles)
    index = torch.tensor([max(u, 0) for u in units], dtype=torch.long, device=t.device)
    out = torch.index_select(t, axis, expand_index(index, block, tiles, size))
    if any(u < 0 for u in units):
        keep = torch.tensor([float(u >= 0) for u in units], dtype=t.dtype, device=t.device)
        keep = keep.repeat_interleave(block).repeat(tiles)  # expand_index's order
        shape = [1] * t.ndim
        shape[axis] = keep.numel()
        out = out * keep.view(shape)
    return out


def _changed_slots(old: Sequence[int], new: Sequence[int]) -> list[int]:
    """The positions where ``old`` and ``new`` differ (iterated in C: called at every step)."""
    return list(itertools.compress(range(len(new)), map(operator.ne, old, new)))


@dataclass
class _Group:
    """Products of one space that read the same other free spaces (``deps``)."""

    deps: tuple[str, ...]
    members: list[tuple[PairedTensor, int, Layout]] = field(default_factory=list)
    entries: int = 0  # entries per unit, summed over members
    reuse: bool = False
    key: tuple[Match, ...] | None = None
    value: torch.Tensor | None = None
    # per member, the one axis on the dependency (when every member has exactly one): the
    # group can then be updated in place (see the module docstring)
    dep_axes: list[tuple[int, Layout]] | None = None
    updates: int = 0


class CostProducts:
    """The LAP costs and the objective J of a set of paired tensors, with products reused.

    One instance serves every run of a job (random restarts too): what it keeps is keyed by
    the matches it was computed from, never by the run.
    """

    def __init__(self, work: Sequence[PairedTensor], free: Sequence[str]) -> None:
        self._indices: dict[tuple[int, int, int],
                            tuple[Match, torch.Tensor, torch.Tensor, bool]] = {}
        self._unfolded: dict[tuple[int, int], torch.Tensor] = {}
        self._terms: dict[int, list[tuple[tuple[Match, ...], float]]] = {}
        self._groups: dict[str, list[_Group]] = {s: [] for s in free}
        budget = sum(p.base.numel() * p.base.element_size()
                     + p.target.numel() * p.target.element_size() for p in work)
        for pair in work:
            for dim, (space, layout) in enumerate(pair.axes):
                if space not in self._groups:
                    continue
                deps = tuple(sorted({s for d, (s, _) in enumerate(pair.axes)
                                     if d != dim and s in self._groups}))
                groups = self._groups[space]
                group = next((g for g in groups if g.deps == deps), None)
                if group is None:
                    group = _Group(deps)
                    groups.append(group)
                group.members.append((pair, dim, layout))
                block, tiles = split_layout(layout)
                units = max(1, pair.base.shape[dim] // (block * tiles))  # 0: an empty space
                group.entries += pair.base.numel() // units
        # Fixed-input groups (deps == ()) are kept first: they never change. The rest of the
        # budget goes to base unfoldings and dependent groups: a group that can be updated in
        # place, or that sits beside another dependent group (a space is solved again only
        # after a dependency moved, so a lone group that cannot be updated has always changed).
        plan: list[tuple[int, str, _Group]] = []
        for space in sorted(self._groups):
            groups = self._groups[space]
            for group in groups:
                group.dep_axes = self._dep_axes(group)
            dependent = sum(1 for g in groups if g.deps)
            for group in groups:
                if group.entries >= MIN_REUSED_ENTRIES_PER_UNIT and (
                        not group.deps or dependent >= 2 or group.dep_axes is not None):
                    plan.append((1 if group.deps else 0, space, group))
        for rank, space, group in sorted(plan, key=lambda item: (item[0], item[1])):
            pair, dim, layout = group.members[0]
            block, tiles = split_layout(layout)
            need = (pair.base.shape[dim] * pair.target.shape[dim] * pair.base.element_size()
                    // (block * tiles) ** 2)
            if rank and budget >= need:
                budget -= self._keep_unfolded(group, budget - need)
            if need <= budget:
                group.reuse = True
                budget -= need

    @staticmethod
    def _dep_axes(group: _Group) -> list[tuple[int, Layout]] | None:
        """Per member, its one axis on the group's one dependency; None when a member has
        none or several (then the group is rebuilt, never updated)."""
        if len(group.deps) != 1:
            return None
        out = []
        for pair, dim, _ in group.members:
            on_dep = [(d, lay) for d, (s, lay) in enumerate(pair.axes)
                      if d != dim and s == group.deps[0]]
            if len(on_dep) != 1:
                return None
            out.append(on_dep[0])
        return out

    def _keep_unfolded(self, group: _Group, budget: int) -> int:
        """Unfold the base tensors of ``group`` once where unfolding copies; bytes used."""
        used = 0
        for pair, dim, layout in group.members:
            key = (id(pair), dim)
            if key in self._unfolded:
                continue
            flat = unfold(pair.base, dim, layout)
            if flat.untyped_storage().data_ptr() == pair.base.untyped_storage().data_ptr():
                continue  # a view: nothing to keep
            size = flat.numel() * flat.element_size()
            if used + size <= budget:
                self._unfolded[key] = flat
                used += size
        return used

    def replace_target(self, pair: PairedTensor, target: torch.Tensor) -> None:
        """Give ``pair`` another target tensor of the same shape (grouped-query copies
        reordered, align/copies.py): what was kept of products and terms that read the old one
        is dropped, the rest stays."""
        pair.target = target
        self._terms.pop(id(pair), None)
        for groups in self._groups.values():
            for group in groups:
                if any(member is pair for member, _, _ in group.members):
                    group.key, group.value, group.updates = None, None, 0

    # -- mapping target axes ---------------------------------------------------------------
    def _index(self, match: Match, layout: Layout, device: torch.device,
               ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        block, tiles = split_layout(layout)
        key = (id(match), block, tiles)
        hit = self._indices.get(key)
        if hit is not None and hit[0] is match and hit[1].device == device:
            return hit[1], hit[2], hit[3]
        if len(self._indices) > 4096:
            self._indices.clear()
        rows = expand_index(match.rows_tensor(device), block, tiles, match.base_size)
        cols = expand_index(match.cols_tensor(device), block, tiles, match.target_size)
        same = match.base_size == match.target_size and match.is_identity
        self._indices[key] = (match, rows, cols, same)
        return rows, cols, same

    def _map_axis(self, t: torch.Tensor, dim: int, match: Match, layout: Layout) -> torch.Tensor:
        rows, cols, same = self._index(match, layout, t.device)
        if same:
            return t
        picked = torch.index_select(t, dim, cols)
        if match.padded == 0:  # rows are then 0..m-1 in order
            return picked
        block, tiles = split_layout(layout)
        shape = list(t.shape)
        shape[dim] = match.base_size * block * tiles
        return t.new_zeros(shape).index_copy_(dim, rows, picked)

    def mapped(self, pair: PairedTensor, matches: Mapping[str, Match],
               skip: int | None = None) -> torch.Tensor:
        """The target tensor with every axis but ``skip`` mapped by ``matches``."""
        out = pair.target
        for dim, (space, layout) in enumerate(pair.axes):
            if space is not None and dim != skip:
                out = self._map_axis(out, dim, matches[space], layout)
        return out

    # -- costs and objective ---------------------------------------------------------------
    def _product(self, pair: PairedTensor, dim: int, layout: Layout,
                 matches: Mapping[str, Match]) -> torch.Tensor:
        base = self._unfolded.get((id(pair), dim))
        if base is None:
            base = unfold(pair.base, dim, layout)
        # Map the target's other axes after moving ``dim`` first: index_select then writes the
        # unfolded layout directly, and the unfolding below is a view instead of a copy.
        target = torch.movedim(pair.target, dim, 0)
        for d, (space, lay) in enumerate(pair.axes):
            if space is not None and d != dim:
                target = self._map_axis(target, d + 1 if d < dim else d, matches[space], lay)
        return base @ unfold(target, 0, layout).T

    def _group_value(self, group: _Group, matches: Mapping[str, Match]) -> torch.Tensor:
        key = tuple(matches[s] for s in group.deps)
        if group.reuse and group.value is not None and group.key is not None:
            if group.key == key:
                return group.value
            if self._update(group, group.key[0] if group.key else None, matches):
                group.key = key
                return group.value
        group.updates = 0
        value = None
        for pair, dim, layout in group.members:
            product = self._product(pair, dim, layout, matches)
            value = product if value is None else value.add_(product)
        assert value is not None
        if group.reuse:
            group.key, group.value = key, value
        return value

    def _update(self, group: _Group, old: Match | None, matches: Mapping[str, Match]) -> bool:
        """Update ``group.value`` in place from the match ``old`` of its one dependency to
        the current one, when few of its slots changed; False when it must be rebuilt."""
        if group.dep_axes is None or old is None or group.updates >= MAX_UPDATES:
            return False
        new = matches[group.deps[0]]
        old_src, new_src = old.source_index(), new.source_index()
        slots = _changed_slots(old_src, new_src)
        if len(slots) > MAX_UPDATED_FRACTION * max(1, len(new_src)):
            return False
        for (pair, dim, _), (d, _) in zip(group.members, group.dep_axes):
            for other, (space, lay) in enumerate(pair.axes):  # other axes must map as they are
                if space is not None and other not in (dim, d) and \
                        not self._index(matches[space], lay, pair.target.device)[2]:
                    return False
        assert group.value is not None
        for (pair, dim, layout), (d, lay) in zip(group.members, group.dep_axes):
            group.value.add_(self._delta(pair, dim, layout, d, lay, slots, old_src, new_src))
        group.updates += 1
        return True

    @staticmethod
    def _delta(pair: PairedTensor, dim: int, layout: Layout, d: int, lay: Layout,
               slots: list[int], old_src: tuple[int, ...], new_src: tuple[int, ...],
               ) -> torch.Tensor:
        """The change of one member's product when the base slots ``slots`` of axis ``d``
        take their target units from ``new_src`` instead of ``old_src`` (-1: padded)."""
        axis = d + 1 if d < dim else d  # axis d once ``dim`` is moved first
        base, target = torch.movedim(pair.base, dim, 0), torch.movedim(pair.target, dim, 0)
        picked = _take(base, axis, slots, lay)
        change = (_take(target, axis, [new_src[j] for j in slots], lay)
                  - _take(target, axis, [old_src[j] for j in slots], lay))
        return unfold(picked, 0, layout) @ unfold(change, 0, layout).T

    def cost(self, space: str, matches: Mapping[str, Match], dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
        """The m x n LAP cost of ``space`` with every other space at its match in ``matches``."""
        # Kept products must not change, so the sum goes into a product built for this call
        # when there is one (a + b = b + a exactly: the same bits as adding in group order),
        # else into one new tensor; a kept product is copied only when it is the whole cost.
        cost: torch.Tensor | None = None
        owned = False  # cost is a tensor of this call, not a kept product
        for group in self._groups[space]:
            value = self._group_value(group, matches)
            if cost is None:
                cost, owned = value, not group.reuse
            elif owned:
                cost.add_(value)
            elif not group.reuse:
                cost, owned = value.add_(cost), True
            else:
                cost, owned = cost + value, True
        if cost is None:
            current = matches[space]
            return torch.zeros(current.base_size, current.target_size, dtype=dtype, device=device)
        return cost if owned else cost.clone()

    def objective(self, pairs: Sequence[PairedTensor], matches: Mapping[str, Match]) -> float:
        """J = sum of <base, mapped target> over ``pairs``, in float64 (:func:`dot64`).

        A tensor's term is kept with the matches it was computed for (the last two sets): the
        J of the current matches, asked before and after each candidate and once per sweep, is
        then mostly known already.
        """
        total = 0.0
        for pair in pairs:
            key = tuple(matches[s] for s, _ in pair.axes if s is not None)
            value = self._term(pair, key)
            if value is None:
                value = self._store(pair, key, dot64(pair.base, self.mapped(pair, matches)))
            total += value
        return total

    def objective_moved(self, pairs: Sequence[PairedTensor], matches: Mapping[str, Match],
                        space: str, candidate: Match) -> float:
        """J over ``pairs`` with ``space`` at ``candidate`` and the others at ``matches``.

        A tensor with one axis on ``space`` changes only in the entries of the base slots whose
        target unit changed, so its term is its current term plus <B, T_new> - <B, T_old> over
        those entries alone, each summed by :func:`dot64` (exact products, float64 sums).
        Tensors with two axes on the space, or moves of most slots, are summed whole.
        """
        moved = dict(matches)
        moved[space] = candidate
        old_src, new_src = matches[space].source_index(), candidate.source_index()
        slots = _changed_slots(old_src, new_src)
        total = 0.0
        for pair in pairs:
            on = [(d, lay) for d, (s, lay) in enumerate(pair.axes) if s == space]
            key = tuple(moved[s] for s, _ in pair.axes if s is not None)
            value = self._term(pair, key)
            if value is None and len(on) == 1 and 2 * len(slots) <= len(new_src):
                d, lay = on[0]
                base = _take(pair.base, d, slots, lay)

                def mapped(src: tuple[int, ...], pair: PairedTensor = pair, d: int = d,
                           lay: Layout = lay) -> torch.Tensor:
                    out = _take(pair.target, d, [src[j] for j in slots], lay)
                    for other, (s, layout) in enumerate(pair.axes):
                        if s is not None and other != d:
                            out = self._map_axis(out, other, matches[s], layout)
                    return out

                old = self.objective([pair], matches)
                value = self._store(pair, key, old + dot64(base, mapped(new_src))
                                    - dot64(base, mapped(old_src)))
            elif value is None:
                value = self.objective([pair], moved)
            total += value
        return total

    def _term(self, pair: PairedTensor, key: tuple[Match, ...]) -> float | None:
        return next((v for k, v in self._terms.get(id(pair), ()) if k == key), None)

    def _store(self, pair: PairedTensor, key: tuple[Match, ...], value: float) -> float:
        seen = self._terms.setdefault(id(pair), [])
        seen.insert(0, (key, value))
        del seen[2:]
        return value
