"""Grouped-query attention: reordering the query heads inside each key/value head's group.

In grouped-query attention every key/value head is read by ``repeat`` query heads; the spec puts
Q's rows and O's columns on the key/value heads' spaces, each head's dims written once per query
head of its group (``graph.spec.Axis``: repeat, span). Copy k of a key/value head on those axes
is query head k of its group. Reordering the query heads of a group among themselves, the same
way on Q's rows and O's columns, leaves the function unchanged, so two models trained apart
differ by such a reorder per group on top of the head and dim permutations that descent solves.

Descent (descent.py) sees a repeated axis as tiles of copies paired copy by copy. Given its
matches, the best reorder is exact and cheap: for each matched pair of heads (base h, target j)
and each copy pair (k, l), the inner product of the base's copy k of h with the target's copy l
of j (its other axes mapped) summed over every repeated tensor of the attention; one
repeat x repeat LAP per head pair. It is one more coordinate of the descent, visited after
every sweep: the target's copies are reordered (a change that keeps its function) when that
raises J, and the next sweep solves the spaces against the reordered tensors. Random restarts
start from random orders: with the copies scrambled, Q's and O's products are noise in the
costs of the residual stream, and a chain starting inside a small Llama settled with the stream
wrong from every start that kept the copies in order.

The copy orders found are carried by the matches (``Match.copies``), so every mapping of target
tensors (``transform_tensor``) applies them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..graph.spec import PermutationSpec
from .generalized import Layout, Match, canonical_axis, full_layout
from .lap import assignment_value, solve_lap
from .products import CostProducts, PairedTensor


@dataclass(frozen=True)
class _RepeatedAxis:
    """A repeated axis of a working tensor, laid out as descent keeps it (canonical_axis):
    ``tiles`` x ``repeat`` copies x units x ``block`` entries."""

    pair: int  # index into the working tensors
    dim: int
    tiles: int
    block: int


@dataclass(frozen=True)
class _CopyFamily:
    """The repeated axes of one attention: their base spaces share one copy order per head."""

    spaces: tuple[str, ...]
    spans: tuple[int, ...]  # per space, dims per head
    repeat: int
    base_heads: int
    target_heads: int
    axes: tuple[tuple[_RepeatedAxis, int], ...]  # (axis, index of its space in ``spaces``)


class QueryCopies:
    """The copy orders of the grouped-query attentions of one descent run (module docstring).

    The run's working tensors are reordered in place (``CostProducts.replace_target``: the
    products of the other tensors stay valid); ``restore`` gives them back as they were.
    """

    def __init__(self, families: Sequence[_CopyFamily], work: Sequence[PairedTensor]) -> None:
        self.families = list(families)
        # per family: target head -> the order of its copies against the target as given
        self.orders = [torch.arange(f.repeat).repeat(f.target_heads, 1) for f in self.families]
        self._given = {axis.pair: work[axis.pair].target
                       for f in self.families for axis, _ in f.axes}

    @staticmethod
    def find(base_spec: PermutationSpec, target_spec: PermutationSpec,
             pairs: Mapping[str, str], free: Sequence[str],
             original_axes: Mapping[str, tuple], work: Sequence[PairedTensor]
             ) -> list[_CopyFamily]:
        """The grouped-query attentions whose copies may be reordered (``QueryCopies``'s
        argument). ``original_axes``: base key -> per axis (base space, layout) before descent
        made repeated axes plain; ``pairs``: base space -> target space."""
        found: dict[str, dict] = {}
        for index, pair in enumerate(work):
            for dim, (space, layout) in enumerate(original_axes[pair.base_key]):
                if space is None:
                    continue
                block, tiles, repeat, span = full_layout(layout)
                if repeat == 1:
                    continue
                group = base_spec.head_groups.get(space)
                family = found.setdefault(group.family if group else space,
                                          {"spaces": {}, "repeat": repeat, "axes": []})
                if family["repeat"] != repeat or space not in free:
                    # mixed group sizes are not one attention's query heads; and a space that
                    # keeps its order would keep its copies' order while the others moved
                    family["repeat"] = 0
                family["spaces"][space] = span
                family["axes"].append((_RepeatedAxis(index, dim, tiles, block), space))
        families = []
        for family in found.values():
            spaces = sorted(family["spaces"])
            spans = tuple(family["spaces"][s] for s in spaces)
            heads = {(base_spec.spaces[s].size // sp, target_spec.spaces[pairs[s]].size // sp)
                     for s, sp in zip(spaces, spans)}
            if family["repeat"] < 2 or len(heads) != 1:
                continue
            (hb, ht), = heads
            axes = tuple((axis, spaces.index(s)) for axis, s in family["axes"])
            families.append(_CopyFamily(tuple(spaces), spans, family["repeat"], hb, ht, axes))
        return families

    def best_step(self, work: Sequence[PairedTensor], matches: Mapping[str, Match],
                  products: CostProducts) -> list[dict[int, torch.Tensor]]:
        """Per family, target head -> the reorder of its current copies that best matches the
        base (only heads whose copies move), with the other spaces at ``matches``."""
        steps: list[dict[int, torch.Tensor]] = []
        for family in self.families:
            heads = head_pairs(matches[family.spaces[0]], family.spans[0])
            step: dict[int, torch.Tensor] = {}
            if heads is not None and all(head_pairs(matches[s], sp) == heads
                                         for s, sp in zip(family.spaces, family.spans)):
                cost = sum(copy_costs(work[axis.pair].base,
                                      products.mapped(work[axis.pair], matches), axis.dim,
                                      axis.tiles, family.repeat, family.base_heads)
                           for axis, _ in family.axes)
                step = best_orders(cost, heads)
            steps.append(step)
        return steps

    def random_steps(self, generator: torch.Generator) -> list[dict[int, torch.Tensor]]:
        """Random reorders of every target head's copies (a random start of the descent)."""
        return [{j: torch.randperm(f.repeat, generator=generator) for j in range(f.target_heads)}
                for f in self.families]

    def pairs(self, steps: Sequence[Mapping[int, torch.Tensor]],
              work: Sequence[PairedTensor]) -> list[PairedTensor]:
        """The working tensors that ``steps`` change."""
        return [work[axis.pair] for family, step in zip(self.families, steps) if step
                for axis, _ in family.axes]

    def reorder(self, steps: Sequence[Mapping[int, torch.Tensor]],
                work: Sequence[PairedTensor], products: CostProducts) -> tuple:
        """Reorder the target's copies in the working tensors (new copy k of target head j is
        its current copy ``steps[f][j][k]``) and record it; returns what :meth:`undo` needs."""
        before = ({axis.pair: work[axis.pair].target for family, step in zip(self.families, steps)
                   if step for axis, _ in family.axes}, [o.clone() for o in self.orders])
        for family, step, orders in zip(self.families, steps, self.orders):
            if not step:
                continue
            order = torch.arange(family.repeat).repeat(family.target_heads, 1)
            for j, o in step.items():
                order[j] = o
                orders[j] = orders[j][o]
            for axis, s in family.axes:
                pair = work[axis.pair]
                index = _copy_index(order, family.spans[s], axis.tiles, axis.block)
                products.replace_target(pair, torch.index_select(
                    pair.target, axis.dim, index.to(pair.target.device)))
        return before

    def undo(self, before: tuple, work: Sequence[PairedTensor], products: CostProducts) -> None:
        """Take back a :meth:`reorder` (``before``: what it returned)."""
        targets, self.orders = before
        for index, target in targets.items():
            products.replace_target(work[index], target)

    def restore(self, work: Sequence[PairedTensor], products: CostProducts) -> None:
        """The working tensors as they were given (the next run starts from them)."""
        for index, target in self._given.items():
            if work[index].target is not target:
                products.replace_target(work[index], target)

    def attach(self, matches: Mapping[str, Match]) -> dict[str, Match]:
        """``matches`` with the copy orders recorded so far, against the target as given."""
        out = dict(matches)
        for family, orders in zip(self.families, self.orders):
            for space, span in zip(family.spaces, family.spans):
                heads = head_pairs(out[space], span)
                if heads is not None:
                    out[space] = out[space].with_copies([orders[j].tolist() for _, j in heads])
        return out


def copy_costs(base: torch.Tensor, mapped: torch.Tensor, dim: int, tiles: int, repeat: int,
               heads: int) -> torch.Tensor:
    """(heads, repeat, repeat) float64 CPU: entry (h, k, l) is the inner product of the base's
    copy k of head h with the mapped target's copy l placed at head h, for an axis of ``heads``
    base heads laid out as ``tiles`` x copies x units x block (``_RepeatedAxis``)."""
    b = torch.movedim(base, dim, 0).reshape(tiles, repeat, heads, -1)
    m = torch.movedim(mapped.to(base.dtype), dim, 0).reshape(tiles, repeat, heads, -1)
    return torch.einsum("tkhx,tlhx->hkl", b, m).double().cpu()


def best_orders(cost: torch.Tensor, heads: Sequence[tuple[int, int]]
                ) -> dict[int, torch.Tensor]:
    """Target head -> the reorder of its copies that best matches its base head (one
    repeat x repeat LAP per pair ``heads`` of (base head, target head)); only heads whose
    copies move."""
    out: dict[int, torch.Tensor] = {}
    for h, j in heads:
        order, _ = _assign(cost[h])
        if order != list(range(len(order))):
            out[j] = torch.tensor(order)
    return out


def head_pairs(match: Match, span: int) -> list[tuple[int, int]] | None:
    """(base head, target head) of each head of matched pairs, in row order, or None when the
    match splits a head."""
    if match.matched % span:
        return None
    out = []
    for g in range(0, match.matched, span):
        rows, cols = match.rows[g:g + span], match.cols[g:g + span]
        h, j = rows[0] // span, cols[0] // span
        if any(r // span != h for r in rows) or any(c // span != j for c in cols):
            return None
        out.append((h, j))
    return out


def _copy_index(order: torch.Tensor, span: int, tiles: int, block: int) -> torch.Tensor:
    """Entry index of an axis laid out as tiles x copies x units x block (``_RepeatedAxis``)
    that puts copy ``order[u // span, k]`` of unit u in copy k's place."""
    heads, repeat = order.shape
    units = heads * span
    u = torch.arange(units)
    source = order[u // span].T  # (repeat, units): the copy each place takes
    index = (torch.arange(tiles)[:, None, None] * repeat + source[None]) * units + u
    return (index[..., None] * block + torch.arange(block)).reshape(-1)


def solve_with_copies(tensors: Sequence[tuple[torch.Tensor, torch.Tensor, int]], layout: Layout,
                      base_heads: int, target_heads: int, dims_free: bool,
                      max_iter: int = 10) -> Match:
    """The best match of one repeated axis (a layer step's Q rows or O columns) over its heads,
    the dims inside them (unless pinned) and the query heads' order inside each group, with
    the tensors' other axes already mapped.

    tensors: (base, target, dim) with the repeated axis at ``dim`` in ``layout``; the target
    in its own units on that axis. For base head i and target head j the value of pairing them
    is the best copy order (a repeat x repeat LAP) when the dims are pinned; with free dims the
    copy order and the dims' assignment (a span x span LAP) are alternated until the value stops
    rising (each step exact given the other), from the copies paired by the value of each copy
    pair's own best dims' assignment. A LAP over the head values then pairs the heads.
    """
    block, tiles, repeat, span = full_layout(layout)
    gains = None
    for base, target, dim in tensors:
        b = torch.movedim(canonical_axis(base, dim, layout)[0], dim, 0)
        t = torch.movedim(canonical_axis(target.to(base.dtype), dim, layout)[0], dim, 0)
        b = b.reshape(tiles, repeat, base_heads, span, -1)
        t = t.reshape(tiles, repeat, target_heads, span, -1)
        # (i, k, j, l, d, e): base head i copy k dim d against target head j copy l dim e
        g = (torch.einsum("tkidx,tljex->ikjlde", b, t) if dims_free
             else torch.einsum("tkidx,tljdx->ikjl", b, t)).double().cpu()
        gains = g if gains is None else gains + g
    value = torch.zeros(base_heads, target_heads, dtype=torch.float64)
    chosen: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    in_order = list(range(span))
    for i in range(base_heads):
        for j in range(target_heads):
            g = gains[i, :, j]
            if not dims_free:
                order, v = _assign(g)
                chosen[(i, j)] = (order, in_order)
            else:
                # the copies start paired by the best dims' assignment of each copy pair (with
                # the copies in order the dims of wrongly paired copies would be compared)
                pair_value = torch.tensor([[_assign(g[k, c])[1] for c in range(repeat)]
                                           for k in range(repeat)], dtype=torch.float64)
                copies, _ = _assign(pair_value)
                dims, v = None, -float("inf")
                for _ in range(max_iter):
                    dims, _ = _assign(sum(g[k, c] for k, c in enumerate(copies)))
                    copies, new = _assign(g[..., torch.arange(span), torch.tensor(dims)].sum(-1))
                    settled, v = new <= v + 1e-12 * abs(v), new  # each step never lowers it
                    if settled:
                        break
                chosen[(i, j)] = (copies, dims)
            value[i, j] = v
    rows, cols = solve_lap(value)
    pairs = sorted(zip(rows.tolist(), cols.tolist()))
    unit_rows, unit_cols, orders = [], [], []
    for i, j in pairs:
        copies, dims = chosen[(i, j)]
        unit_rows += [i * span + r for r in range(span)]
        unit_cols += [j * span + d for d in dims]
        orders.append(copies)
    match = Match.from_lap(unit_rows, unit_cols, base_heads * span, target_heads * span)
    return match.with_copies(orders)


def _assign(cost: torch.Tensor) -> tuple[list[int], float]:
    """The maximising assignment of a square cost (row r -> column order[r]) and its value
    (``solve_lap`` returns the rows in order, so its columns are the order)."""
    rows, cols = solve_lap(cost)
    return cols.tolist(), assignment_value(cost, rows, cols)
