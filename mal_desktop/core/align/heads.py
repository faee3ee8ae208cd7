"""Matching the spaces of attention heads (``graph.spec.HeadGroup``): heads whole, dims inside.

A head-grouped space holds H heads of D units each; what may move is a permutation of the heads,
shared by the spaces of one attention (its *family*: Q with K, V with O), and inside each head a
permutation of its D dims, one per space (none where the dims are pinned, as rotary embeddings
pin Q and K). Given the LAP cost C_s (H_b*D x H_t*D) of every space s of a family with the other
spaces of the model at their current matches, the best move is found exactly:

- for each base head i and target head j, the value of pairing them in space s is the best
  assignment of j's dims to i's dims inside the D x D block C_s[i, j] (a small LAP), or the
  block's trace when the dims are pinned;
- summed over the family's spaces this is an H_b x H_t cost; its (rectangular) LAP pairs heads;
- each space's match sends target head j's dims, in the order of their block's assignment, to
  base head i's slots. Heads the narrower side lacks are zero-padded or dropped whole.

Different head counts with equal D are a rectangular head LAP; different D cannot be matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import AlignmentError
from ..graph.spec import PermutationSpec
from .generalized import Match
from .lap import solve_lap


@dataclass(frozen=True)
class HeadFamily:
    """Base spaces of one attention optimised together, with their target's head counts.

    spaces: base spaces (sorted); inner_free: per space, whether the dims inside a head may move
    (in both models).
    """

    spaces: tuple[str, ...]
    base_heads: int
    target_heads: int
    dim: int
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
        if gb is None or gt is None or db != dt:
            raise AlignmentError(
                f"space {bs!r}: attention heads of {db} dimension(s) in the base and {dt} in "
                f"the target ({ts!r}); heads of different sizes cannot be matched")
        if target_family.setdefault(gb.family, gt.family) != gt.family:
            raise AlignmentError(f"space {bs!r}: the base's attention {gb.family!r} pairs with "
                                 f"two attentions of the target")
        members.setdefault(gb.family, []).append(bs)
    out: dict[str, HeadFamily] = {}
    for spaces in members.values():
        spaces = sorted(spaces)
        dim = base_spec.head_groups[spaces[0]].dim
        counts = {(base_spec.spaces[s].size // dim, target_spec.spaces[pairs[s]].size // dim)
                  for s in spaces}
        if len(counts) != 1:
            raise AlignmentError(f"spaces {spaces}: one attention with different head counts")
        (hb, ht), = counts
        inner = tuple(base_spec.head_groups[s].inner_free
                      and target_spec.head_groups[pairs[s]].inner_free for s in spaces)
        family = HeadFamily(tuple(spaces), hb, ht, dim, inner)
        out.update({s: family for s in spaces})
    return out


def solve_family(costs: Sequence[torch.Tensor], family: HeadFamily) -> list[Match]:
    """The best matches of a family's spaces for their LAP costs (module docstring).

    costs: one (base_heads*dim x target_heads*dim) cost per space of ``family``, in its order.
    Returns one Match per space: whole heads, one head pairing for all spaces.
    """
    hb, ht, d = family.base_heads, family.target_heads, family.dim
    head_cost = torch.zeros(hb, ht, dtype=torch.float64)
    inner: list[dict[tuple[int, int], torch.Tensor] | None] = []
    for cost, free in zip(costs, family.inner_free):
        blocks = cost.detach().to("cpu", torch.float64).reshape(hb, d, ht, d).permute(0, 2, 1, 3)
        if not free:
            head_cost += torch.diagonal(blocks, dim1=2, dim2=3).sum(-1)
            inner.append(None)
            continue
        best: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(hb):
            for j in range(ht):
                rows, cols = solve_lap(blocks[i, j])
                order = torch.argsort(rows)
                best[(i, j)] = cols[order]
                head_cost[i, j] += blocks[i, j][rows, cols].sum()
        inner.append(best)
    rows, cols = solve_lap(head_cost)
    return [_compose(rows.tolist(), cols.tolist(), perms, family) for perms in inner]


def _compose(heads_b: list[int], heads_t: list[int],
             perms: dict[tuple[int, int], torch.Tensor] | None, family: HeadFamily) -> Match:
    d = family.dim
    rows: list[int] = []
    cols: list[int] = []
    for i, j in zip(heads_b, heads_t):
        inside = perms[(i, j)].tolist() if perms is not None else range(d)
        rows += [i * d + k for k in range(d)]
        cols += [j * d + int(p) for p in inside]
    return Match.from_lap(rows, cols, family.base_heads * d, family.target_heads * d)


def random_family_matches(family: HeadFamily, generator: torch.Generator) -> dict[str, Match]:
    """Random matches of a family's spaces that keep heads whole (for random restarts)."""
    heads = Match.random(family.base_heads, family.target_heads, generator)
    out = {}
    for space, free in zip(family.spaces, family.inner_free):
        perms = {(i, j): torch.randperm(family.dim, generator=generator) if free
                 else torch.arange(family.dim) for i, j in zip(heads.rows, heads.cols)}
        out[space] = _compose(list(heads.rows), list(heads.cols), perms, family)
    return out
