"""Matching the spaces of attention heads (``graph.spec.HeadGroup``): heads whole, dims inside.

A head-grouped space holds H heads of D units each (a fused q/k/v projection: three segments of
them); what may move is a permutation of the heads, shared by the spaces of one attention (its
*family*), and inside each head a permutation of its D dims, shared by the segments and spaces
that share it (Q with K, V with O's input; none where the dims are pinned, as rotary embeddings
pin Q and K). Given the LAP cost C_s (units x units) of every space s of a family with the rest
of the model at its current matches, the best move is found exactly:

- for each within-head permutation c, base head i and target head j, the D x D blocks of the
  segments sharing c are summed; the value of pairing i with j is the best assignment of j's
  dims to i's inside that block (a small LAP), or its trace when the dims are pinned;
- summed over c this is an H_b x H_t cost; its (rectangular) LAP pairs heads;
- each segment sends target head j's dims, in the order of c's assignment, to base head i's
  slots. Heads the narrower model lacks are zero-padded or dropped whole.

Different head counts with equal D are a rectangular head LAP; different D cannot be matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import AlignmentError
from ..graph.spec import PermutationSpec
from .copies import solve_with_copies
from .generalized import Layout, Match, axis_cost, full_layout, transform_tensor
from .lap import improves, solve_lap


@dataclass(frozen=True)
class HeadFamily:
    """Base spaces of one attention optimised together, with their target's head counts.

    spaces: base spaces (sorted); parts: per space, the within-head permutation (an index into
    ``inner_free``) of each of its segments; inner_free: per within-head permutation, whether
    the dims may move (in both models).
    """

    spaces: tuple[str, ...]
    base_heads: int
    target_heads: int
    dim: int
    parts: tuple[tuple[int, ...], ...]
    inner_free: tuple[bool, ...]


def head_families(base_spec: PermutationSpec, target_spec: PermutationSpec,
                  pairs: Mapping[str, str], free: Sequence[str]) -> dict[str, HeadFamily]:
    """Each free base space that holds head dims -> its family.

    Raises AlignmentError when the paired spaces do not hold heads alike: heads of different
    sizes, head dims paired with a plain space, or one family's spaces paired into two.
    """
    members: dict[str, list[str]] = {}
    target_family: dict[str, str] = {}
    for bs in free:
        ts = pairs[bs]
        gb, gt = base_spec.head_groups.get(bs), target_spec.head_groups.get(ts)
        db, dt = (gb.dim if gb else 1), (gt.dim if gt else 1)
        if db == 1 and dt == 1:
            continue  # a plain space, or heads moving as blocks (their dims are a block)
        if gb is None or gt is None or db != dt or len(gb.parts) != len(gt.parts):
            raise AlignmentError(
                f"space {bs!r}: attention heads of {db} dimension(s) in the base and {dt} in "
                f"the target ({ts!r}), or differently fused projections; such heads cannot "
                "be matched")
        if target_family.setdefault(gb.family, gt.family) != gt.family:
            raise AlignmentError(f"space {bs!r}: the base's attention {gb.family!r} pairs with "
                                 f"two attentions of the target")
        members.setdefault(gb.family, []).append(bs)
    out: dict[str, HeadFamily] = {}
    for spaces in members.values():
        family = _family(sorted(spaces), base_spec, target_spec, pairs)
        out.update({s: family for s in family.spaces})
    return out


def _family(spaces: list[str], base_spec: PermutationSpec, target_spec: PermutationSpec,
            pairs: Mapping[str, str]) -> HeadFamily:
    dim = base_spec.head_groups[spaces[0]].dim
    counts = set()
    index: dict[str, int] = {}
    target_of: dict[str, str] = {}
    free: list[bool] = []
    parts = []
    for s in spaces:
        gb, gt = base_spec.head_groups[s], target_spec.head_groups[pairs[s]]
        segments = len(gb.parts)
        counts.add((base_spec.spaces[s].size // (dim * segments),
                    target_spec.spaces[pairs[s]].size // (dim * segments)))
        own = []
        for (cb, why_b), (ct, why_t) in zip(gb.parts, gt.parts):
            if target_of.setdefault(cb, ct) != ct:
                raise AlignmentError(f"space {s!r}: its heads' dims pair with two different "
                                     "within-head permutations of the target")
            if cb not in index:
                index[cb] = len(free)
                free.append(True)
            free[index[cb]] = free[index[cb]] and not why_b and not why_t
            own.append(index[cb])
        parts.append(tuple(own))
    if len(counts) != 1:
        raise AlignmentError(f"spaces {spaces}: one attention with different head counts")
    (hb, ht), = counts
    return HeadFamily(tuple(spaces), hb, ht, dim, tuple(parts), tuple(free))


def solve_family(costs: Sequence[torch.Tensor], family: HeadFamily) -> list[Match]:
    """The best matches of a family's spaces for their LAP costs (module docstring).

    costs: one (base units x target units) cost per space of ``family``, in its order.
    Returns one Match per space: whole heads, one head pairing for all spaces.
    """
    hb, ht, d = family.base_heads, family.target_heads, family.dim
    blocks = [torch.zeros(hb, ht, d, d, dtype=torch.float64) for _ in family.inner_free]
    for cost, parts in zip(costs, family.parts):
        cost = cost.detach().to("cpu", torch.float64)
        for k, c in enumerate(parts):
            seg = cost[k * hb * d:(k + 1) * hb * d, k * ht * d:(k + 1) * ht * d]
            blocks[c] += seg.reshape(hb, d, ht, d).permute(0, 2, 1, 3)
    head_cost = torch.zeros(hb, ht, dtype=torch.float64)
    inner: list[dict[tuple[int, int], list[int]] | None] = []
    for block, free in zip(blocks, family.inner_free):
        if not free:
            head_cost += torch.diagonal(block, dim1=2, dim2=3).sum(-1)
            inner.append(None)
            continue
        best: dict[tuple[int, int], list[int]] = {}
        for i in range(hb):
            for j in range(ht):
                rows, cols = solve_lap(block[i, j])
                best[(i, j)] = cols.tolist()  # solve_lap gives the rows in order
                head_cost[i, j] += block[i, j][rows, cols].sum()
        inner.append(best)
    rows, cols = solve_lap(head_cost)
    pairs = sorted(zip(rows.tolist(), cols.tolist()))
    return [_compose(pairs, [inner[c] for c in parts], family) for parts in family.parts]


def _compose(pairs: list[tuple[int, int]], perms: list, family: HeadFamily) -> Match:
    """The match of a space whose segment k uses within-head permutations ``perms[k]``
    (None: dims in order) for the head pairs ``pairs``."""
    hb, ht, d = family.base_heads, family.target_heads, family.dim
    rows: list[int] = []
    cols: list[int] = []
    for k, inside in enumerate(perms):
        for i, j in pairs:
            order = inside[(i, j)] if inside is not None else range(d)
            rows += [k * hb * d + i * d + r for r in range(d)]
            cols += [k * ht * d + j * d + int(p) for p in order]
    segments = len(perms)
    return Match.from_lap(rows, cols, segments * hb * d, segments * ht * d)


def random_family_matches(family: HeadFamily, generator: torch.Generator) -> dict[str, Match]:
    """Random matches of a family's spaces that keep heads whole (for random restarts)."""
    heads = Match.random(family.base_heads, family.target_heads, generator)
    pairs = list(zip(heads.rows, heads.cols))
    inner = [{p: torch.randperm(family.dim, generator=generator).tolist() for p in pairs}
             if free else None for free in family.inner_free]
    return {s: _compose(pairs, [inner[c] for c in parts], family)
            for s, parts in zip(family.spaces, family.parts)}


def expand_head_match(match: Match, dim: int, segments: int) -> Match:
    """A match of whole heads (heads as units) as a match of their dims, dims in order, the
    same head map in every segment (how local alignment's result is stored)."""
    if dim == 1 and segments == 1:
        return match
    hb, ht = match.base_size, match.target_size
    rows: list[int] = []
    cols: list[int] = []
    for k in range(segments):
        for i, j in zip(match.rows, match.cols):
            rows += [k * hb * dim + i * dim + r for r in range(dim)]
            cols += [k * ht * dim + j * dim + r for r in range(dim)]
    return Match.from_lap(rows, cols, segments * hb * dim, segments * ht * dim)


def refine_layer_heads(base_w: torch.Tensor, base_b: torch.Tensor | None, target_w: torch.Tensor,
                       target_b: torch.Tensor | None, out: Match | None, inp: Match | None,
                       layouts: tuple[Layout, Layout],
                       families: tuple[HeadFamily | None, HeadFamily | None],
                       free: tuple[bool, bool] = (True, True), max_iter: int = 20
                       ) -> tuple[Match, Match, list[float]]:
    """One layer pair's matches with the dims inside its attention heads matched too.

    Local alignment moves heads as blocks; from its matches this alternates again, each free
    side solved with the other fixed: a side on a space of head dims over every head-preserving
    map (``solve_family``, its exact maximiser; heads may pair differently too), a plain side by
    its LAP, a side repeating grouped-query heads (Q's rows, O's columns) with the query heads'
    order inside each group too (``copies.solve_with_copies``, its match carrying the orders).
    A side given as None (one that local alignment saw unit by unit, not as heads) is first
    solved from the other. A new match is kept only when it raises J, so J never drops.
    Weights in (out, in, ...) orientation; ``layouts``: the out and in axes' layouts
    (``graph.spec.Axis.layout``); ``families``: per side its one-space family, or None for a
    plain side; ``free``: per side whether it may move.
    Returns (out, inp, J after each accepted half-step, starting with J of the first matches).
    """
    def objective(o: Match, i: Match) -> float:
        mapped, _ = transform_tensor(target_w.to(base_w.dtype), {0: (o, layouts[0]),
                                                                 1: (i, layouts[1])})
        total = float((base_w.double() * mapped.double()).sum())
        if base_b is not None and target_b is not None:
            b, _ = transform_tensor(target_b.to(base_b.dtype), {0: (o, layouts[0])})
            total += float((base_b.double() * b.double()).sum())
        return total

    def solve_side(side: int, other: Match) -> Match:
        """The best match of ``side`` with the other side at ``other``."""
        mapped, _ = transform_tensor(target_w.to(base_w.dtype),
                                     {1 - side: (other, layouts[1 - side])})
        tensors = [(base_w.double(), mapped.double())]
        if side == 0 and base_b is not None and target_b is not None:
            tensors.append((base_b.double(), target_b.double()))
        family, layout = families[side], layouts[side]
        if family is not None and full_layout(layout)[2] > 1:
            return solve_with_copies([(b, t, side) for b, t in tensors], layout,
                                     family.base_heads, family.target_heads,
                                     family.inner_free[0])
        cost = sum(axis_cost(b, t, side, layout) for b, t in tensors)
        if family is not None:
            return solve_family([cost], family)[0]
        rows, cols = solve_lap(cost)
        return Match.from_lap(rows, cols, cost.shape[0], cost.shape[1])

    if out is None:
        out = solve_side(0, inp)
    if inp is None:
        inp = solve_side(1, out)
    history = [objective(out, inp)]
    for _ in range(max_iter):
        moved = False
        for side in (0, 1):
            if not free[side]:
                continue
            candidate = solve_side(side, inp if side == 0 else out)
            value = objective(candidate, inp) if side == 0 else objective(out, candidate)
            if candidate != (out, inp)[side] and improves(value, history[-1]):
                out, inp = (candidate, inp) if side == 0 else (out, candidate)
                moved = True
                history.append(value)
        if not moved:
            break
    return out, inp, history


def layer_family(base_spec: PermutationSpec, target_spec: PermutationSpec, base_space: str,
                 target_space: str) -> HeadFamily | None:
    """The one-space family of a layer side on attention head dims (None for a plain side or
    heads moving as blocks). Raises AlignmentError as :func:`head_families`."""
    found = head_families(base_spec, target_spec, {base_space: target_space}, [base_space])
    return found.get(base_space)
