"""Attention heads: settle, once the graph is walked, how each attention's spaces may move.

A view (H*D) -> (H, D) leaves the projection's node with its H*D units and gives the view a
heads label and a within-head label (``rules_shape.ShapeRules.head_view``); viewing such a pair
back as one axis makes a new node that remembers the pair (``head_merge``: the attention's
output read by its output projection). Ops meanwhile join labels: the score product joins the
within-head labels of Q and K, the attention output carries V's, the heads of Q, K and V are
broadcast together. The true symmetry of an attention is a head permutation shared by Q, K, V
and O's input and, inside each head, one permutation of the Q/K dims and another of the V/O dims.

Here the projection nodes that share a within-head label are merged into one space of H*D units
(Q with K, V with O; Q, K and V together when one fused projection writes them), recorded as a
``HeadGroup`` family sharing the head permutation. The dims of a head stay in order
(``inner_reason``) when something pins the within-head label (a rotary table varies along it), a
parameter lies along it (shared by all heads), or it is split into pieces. The heads move as
blocks, as before, when the heads do not line up one to one (grouped-query attention: query
heads share a key/value head, so a key/value head's dims would need one permutation for all its
query heads), when a parameter lies along the heads axis, or when no within-head dim may move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HeadSpace:
    """A settled space of head dims: its family (the heads root), heads, dims per head and why
    its dims keep their order ("" when they may move)."""

    family: int
    heads: int
    dim: int
    inner_reason: str


def settle_heads(tr: Any) -> tuple[dict[int, HeadSpace], dict[int, tuple[int, str]]]:
    """Decide every attention family of the tracer ``tr`` (a ``discover._Tracer`` after its run).

    Returns (fine, blocks): ``fine`` maps the root of each space of head dims to its HeadSpace;
    ``blocks`` maps the heads root of each family whose heads move as blocks to (heads, reason
    the dims are pinned).
    """
    g = tr.g
    regs = [(node, h, i) for node, (h, i) in tr.head_views.items()]
    regs += [(node, h, i) for node, (h, i) in tr.head_merges.items()]
    if not regs:
        return {}, {}
    by_fine: dict[int, tuple[Any, Any]] = {}
    for node, h, i in regs:  # one node, one (heads, dims) pair: a fused Q, K, V shares both
        root = g.find(node)
        if root in by_fine:
            tr.union(by_fine[root][0], h, "attention heads")
            tr.union(by_fine[root][1], i, "attention heads")
        else:
            by_fine[root] = (h, i)
    bound = {}  # roots that hold state axes or layer axes directly
    for (key, _), ref in tr.bound.items():
        bound.setdefault(g.find(ref[0]), key)
    families: dict[int, list[tuple[int, Any, Any]]] = {}
    for node, h, i in regs:
        families.setdefault(g.find(tr.resolve(h)[0]), []).append((node, h, i))
    inner_owner: dict[int, set[int]] = {}
    for fam, members in families.items():
        for _, _, i in members:
            inner_owner.setdefault(g.find(tr.resolve(i)[0]), set()).add(fam)
    fine: dict[int, HeadSpace] = {}
    blocks: dict[int, tuple[int, str]] = {}
    for fam, members in families.items():
        heads = g.units[fam]
        dims = {tr.size_of(i) for _, _, i in members}
        why = _blocks_reason(tr, fam, members, dims, bound)
        reasons: dict[int, str] = {}
        for _, _, i in members:
            root = g.find(tr.resolve(i)[0])
            reasons[root] = _inner_reason(tr, i, root, inner_owner, bound)
        if why is None and all(reasons.values()):
            why = "; ".join(sorted(set(reasons.values())))
        elif why is not None and any(reasons.values()):  # name what would pin them anyway
            why = "; ".join([why] + sorted({r for r in reasons.values() if r}))
        if why is not None:
            for node, h, i in members:
                r, b, t = tr.resolve(h)
                tr.union((node, 1, 1), (r, b * tr.size_of(i), t), "attention heads")
            if g.reason[g.find(fam)] is None:
                blocks[g.find(fam)] = (heads, why)
            continue
        dim = dims.pop()
        spaces: dict[int, int] = {}
        for node, _, i in members:  # projections sharing within-head dims: one space
            root = g.find(tr.resolve(i)[0])
            if root in spaces:
                g.merge(spaces[root], node)
            spaces[root] = g.find(node)
        for root, node in spaces.items():
            fine[g.find(node)] = HeadSpace(fam, heads, dim, reasons[root])
    return fine, blocks


def _blocks_reason(tr: Any, fam: int, members: list, dims: set[int],
                   bound: dict[int, str]) -> str | None:
    """Why the family's heads must move as blocks (None: its dims may be settled one by one)."""
    g = tr.g
    if g.reason[fam] is not None:
        return g.reason[fam]
    if len(dims) != 1:
        return "heads of different sizes"
    if fam in bound:
        return f"a parameter per head ({bound[fam]})"
    dim = next(iter(dims))
    for node, h, _ in members:
        r, b, t = tr.resolve(h)
        if b > 1:
            return ("grouped-query attention (query heads sharing a key/value head would need "
                    "one within-head permutation for the whole group)")
        if t > 1:
            return "heads axis repeated"
        root, beta, tau = g.find_ref(node)
        if (beta, tau) != (1, 1) or g.units[root] != g.units[fam] * dim \
                or g.reason[root] is not None:
            return g.reason[root] or "the heads' projection is laid out otherwise"
    return None


def _inner_reason(tr: Any, label: Any, root: int, owner: dict[int, set[int]],
                  bound: dict[int, str]) -> str:
    """Why the within-head dims of ``label`` keep their order ("" when they may move)."""
    g = tr.g
    if g.reason[root] is not None:
        return g.reason[root]
    _, block, tiles = tr.resolve(label)
    if (block, tiles) != (1, 1):
        return "within-head dimensions split into pieces (e.g. rotary halves)"
    if root in bound:
        return f"a parameter along the head dimension, shared by all heads ({bound[root]})"
    if len(owner.get(root, ())) > 1:
        return "within-head dimensions tied to another attention"
    return ""
