"""Attention heads: settle, once the graph is walked, how each attention's spaces may move.

A view (H*D) -> (H, D) leaves the projection's node with its H*D units and gives the view a
heads label and a within-head label (``rules_shape.ShapeRules.head_view``); viewing such a pair
back as one axis makes a new node that remembers the pair (``head_merge``: the attention's
output read by its output projection). Ops meanwhile join labels: the score product joins the
within-head labels of Q and K, the attention output carries V's, the heads of Q, K and V are
broadcast together. The true symmetry of an attention is a head permutation shared by Q, K, V
and O's input and, inside each head, one permutation of the Q/K dims and another of the V/O dims.

Here the projection nodes that share a within-head label are merged into one space of H*D units
(Q with K, V with O), recorded as a ``HeadGroup`` family sharing the head permutation. A fused
projection writing q, k and v is split into one piece per copy while tracing
(``ShapeRules.segment``); when the pieces became head spaces of one attention its output is one
space of three segments, each sharing the within-head permutations of its piece, otherwise the
pieces are tied back together (tiles of one space, as for any axis cut into equal pieces). The dims of a head stay in order
(``inner_reason``) when something pins the within-head label (a rotary table varies along it), a
parameter lies along it (shared by all heads), or it is split into pieces. Grouped-query
attention (query heads sharing a key/value head: their heads label is the key/value heads' with
block rep) keeps the key/value projections' nodes as the spaces; the query projection's node and
the output projection's input become *repeated* views of them (``SettledHeads.repeated``: each
key/value head's dims once per query head of its group), so one within-head permutation per
key/value head acts on all its query heads. The heads move as blocks when the heads do not line
up so (grouped-query heads with no key/value projection of their own, or cut from a fused
projection), when a parameter lies along the heads axis, or when no within-head dim may move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HeadSpace:
    """A settled space of head dims: its family (the heads root), heads, dims per head and why
    its dims keep their order ("" when they may move)."""

    family: int
    heads: int
    dim: int
    inner_reason: str


@dataclass
class SettledHeads:
    """What ``settle_heads`` decided.

    fine: root of each space of head dims (one within-head permutation per head) -> HeadSpace.
    blocks: heads root of each family whose heads move as blocks -> (heads, why).
    segmented: root of a fused projection's node -> the fine roots of its pieces, in order.
    repeated: node of grouped-query heads (a query projection, the output projection's input)
        -> (the fine node it repeats, repeat, span): its axes lie on that node's space with
        each head's dims written ``repeat`` times (``spec.Axis``).
    """

    fine: dict[int, HeadSpace]
    blocks: dict[int, tuple[int, str]]
    segmented: dict[int, list[int]]
    repeated: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def settle_heads(tr: Any) -> SettledHeads:
    """Decide every attention family of the tracer ``tr`` (a ``discover._Tracer`` after its run)."""
    g = tr.g
    kept, unused = _settle_segments(tr)
    regs = [(node, h, i) for node, (h, i) in tr.head_views.items() if node not in unused]
    regs += [(node, h, i) for node, (h, i) in tr.head_merges.items()]
    fine, blocks, repeated = _settle_families(tr, regs)
    segmented: dict[int, list[int]] = {}
    for node, pieces in kept.items():
        roots = [g.find(p) for p in pieces]
        if all(r in fine for r in roots) and len({g.find(fine[r].family) for r in roots}) == 1:
            segmented[g.find(node)] = roots
        else:  # the attention's heads move as blocks: the pieces are tiles of one space again
            _tie(tr, node, pieces, None)
    return SettledHeads(fine, blocks, segmented,
                        {g.find(n): (g.find(o), r, d) for n, (o, r, d) in repeated.items()})


def _settle_segments(tr: Any) -> tuple[dict[int, list[int]], set[int]]:
    """Tie the pieces of every split node (``ShapeRules.segment``) that cannot stay apart.

    Pieces stay apart only when each was viewed into heads, all of one attention, and the
    placeholder that stood for them before they were taken apart was never constrained.
    Returns (node -> pieces kept apart, placeholders no longer standing for anything).
    """
    g = tr.g
    parents = {g.parent[x] for x in range(len(g.parent)) if g.parent[x] != x}
    bound = {g.find(ref[0]) for ref in tr.bound.values()}
    views = {g.find(n): labels for n, labels in tr.head_views.items()}

    def untouched(x: int) -> bool:
        return g.find(x) == x and g.reason[x] is None and x not in parents and x not in bound

    kept: dict[int, list[int]] = {}
    unused: set[int] = set()
    for node, (pieces, holder) in tr.segments.items():
        ok = g.find(node) == node and g.reason[node] is None
        if holder is not None:
            labels = [lab[0] for lab in tr.head_views.get(holder, ())]
            ok = ok and all(untouched(x) for x in [holder] + labels)
        families = set()
        for p in pieces:
            labels = views.get(g.find(p))
            if labels is None:
                ok = False
                break
            families.add(g.find(tr.resolve(labels[0])[0]))
        if ok and len(families) == 1:
            kept[node] = pieces
            if holder is not None:
                unused.add(holder)
        else:
            _tie(tr, node, pieces, holder)
    return kept, unused


def _tie(tr: Any, node: int, pieces: list[int], holder: int | None) -> None:
    """The pieces (and their placeholder) as one space, the node as its tiles."""
    for p in pieces[1:] + ([holder] if holder is not None else []):
        tr.union((pieces[0], 1, 1), (p, 1, 1), "split axis")
    tr.union((node, 1, 1), (pieces[0], 1, len(pieces)), "split axis")


def _settle_families(tr: Any, regs: list) -> tuple[dict[int, HeadSpace],
                                                  dict[int, tuple[int, str]],
                                                  dict[int, tuple[int, int, int]]]:
    g = tr.g
    if not regs:
        return {}, {}, {}
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
    repeated: dict[int, tuple[int, int, int]] = {}
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
        grouped: list[tuple[int, int, int]] = []
        for node, h, i in members:  # projections sharing within-head dims: one space
            root = g.find(tr.resolve(i)[0])
            rep = tr.resolve(h)[1]
            if rep > 1:  # query heads of a key/value head: that head's dims, repeated
                grouped.append((node, root, rep))
                continue
            if root in spaces:
                g.merge(spaces[root], node)
            spaces[root] = g.find(node)
        for root, node in spaces.items():
            fine[g.find(node)] = HeadSpace(fam, heads, dim, reasons[root])
        for node, root, rep in grouped:
            repeated[node] = (spaces[root], rep, dim)
    return fine, blocks, repeated


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
    pieces = {g.find(p) for nodes, _ in tr.segments.values() for p in nodes}
    plain = {g.find(tr.resolve(i)[0]) for _, h, i in members if tr.resolve(h)[1] == 1}
    for node, h, i in members:
        r, b, t = tr.resolve(h)
        if b > 1 and (g.find(node) in pieces or g.find(tr.resolve(i)[0]) not in plain):
            # grouped-query heads are the dims of a key/value head repeated: that needs the
            # key/value head's own projection, and no fused projection cut into pieces
            return ("grouped-query attention laid out otherwise (query heads sharing a "
                    "key/value head with no projection of its own, or a fused projection)")
        if t > 1:
            return "heads axis repeated"
        root, beta, tau = g.find_ref(node)
        if (beta, tau) != (1, 1) or g.units[root] != g.units[fam] * b * dim \
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
