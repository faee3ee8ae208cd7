"""Label rules for ops that move entries between axes: views, transposes, splits, slices, cat.

A permutation space survives a view when its units stay whole: a flatten keeps one free axis
(channel-major C x H x W -> C*H*W gives block H*W, position-major H x C x W -> H*C*W gives tiles H
and block W); a split of one axis into (heads, head_dim) gives a heads axis and a within-head axis (whether
the dims inside a head may move, or the heads move as blocks, is settled at the end in
``heads.py``); an axis split into k equal pieces
(a fused QKV projection, LSTM gates) is k tiles of one space. Anything else pins what it mixes.
"""

from __future__ import annotations

import math
from typing import Any

from torch import fx

from .labels import Merged, Param, Ref, arg_of, op_names, shape_of

WITHIN_HEAD = "within-head dimensions (heads move as blocks)"


def _refinement(a: list[int], b: list[int]) -> list[int] | None:
    """The coarsest sizes that both ``a`` and ``b`` are merges of, or None when none is."""
    cuts, pa, pb = set(), 1, 1
    for s in a:
        pa *= s
        cuts.add(pa)
    for s in b:
        pb *= s
        cuts.add(pb)
    out, prev = [], 1
    for c in sorted(cuts):
        if c % prev:
            return None
        if c != prev:
            out.append(c // prev)
        prev = c
    return out if len(out) > max(len(a), len(b)) else None


_CARRY = {"transpose", "permute", "unsqueeze", "squeeze", "contiguous", "clone", "alias",
          "detach", "_to_copy", "to"}


def indexed_later(node: fx.Node, dim: int, depth: int = 8) -> bool:
    """Whether output dim ``dim`` of ``node`` is selected or unbound downstream, following
    transposes and (un)squeezes (``qkv.reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)``,
    nn.MultiheadAttention's ``unflatten(-1, (3, E))`` then ``proj[0]``)."""
    if depth == 0:
        return False
    nd = len(shape_of(node.meta["val"])) if hasattr(node.meta.get("val"), "shape") else 0
    for user in node.users:
        if user.op != "call_function":
            continue
        name = op_names(user.target)[1]
        if name in ("select", "unbind"):
            d = arg_of(user, "dim", 0)
            if isinstance(d, int) and nd and d % nd == dim:
                return True
            continue
        new = _carry_dim(user, name, dim, nd)
        if new is not None and indexed_later(user, new, depth - 1):
            return True
    return False


def _carry_dim(user: fx.Node, name: str, dim: int, nd: int) -> int | None:
    """Where dim ``dim`` of a tensor with ``nd`` dims lands after ``user`` (None: lost)."""
    if name not in _CARRY or not nd:
        return None
    if name == "permute":
        order = [d % nd for d in user.args[1]]
        return order.index(dim) if dim in order else None
    if name == "transpose":
        a, b = user.args[1] % nd, user.args[2] % nd
        return b if dim == a else a if dim == b else dim
    if name == "unsqueeze":
        d = user.args[1] % (nd + 1)
        return dim + 1 if d <= dim else dim
    if name == "squeeze":
        dims = user.args[1] if len(user.args) > 1 else None
        if dims is None:
            return None
        dims = [d % nd for d in ([dims] if isinstance(dims, int) else dims)]
        if dim in dims:
            return None
        return dim - sum(1 for d in dims if d < dim)
    return dim


class ShapeRules:
    """Mix-in of the tracer (``discover._Tracer``): rules for views and re-arrangements."""

    def h_reshape(self, node: fx.Node) -> Any:
        x = node.args[0]
        self.view_node = node
        try:
            return self.reshape(self.lab(x), shape_of(x.meta["val"]), shape_of(node.meta["val"]),
                                op_names(node.target)[0])
        finally:
            self.view_node = None

    def reshape(self, xl: list, xs: tuple[int, ...], os_: tuple[int, ...], op: str) -> list:
        """Labels through a view: groups of input dims map to groups of output dims."""
        out: list = [None] * len(os_)
        i = j = 0
        while i < len(xs) or j < len(os_):
            if i < len(xs) and xs[i] == 1:
                i += 1
                continue
            if j < len(os_) and os_[j] == 1:
                out[j] = self.fresh(1, "broadcast axis")
                j += 1
                continue
            if i >= len(xs) or j >= len(os_) or xs[i] <= 0 or os_[j] <= 0:
                return self.pin_all(xl, os_, op)
            gi, gj, pi, pj = [i], [j], xs[i], os_[j]
            while pi != pj:
                if pi < pj and i + 1 < len(xs):
                    i += 1
                    gi.append(i)
                    pi *= xs[i]
                elif pj < pi and j + 1 < len(os_):
                    j += 1
                    gj.append(j)
                    pj *= os_[j]
                else:
                    return self.pin_all(xl, os_, op)
            i, j = i + 1, j + 1
            ins = [d for d in gi if xs[d] != 1]
            outs = [d for d in gj if os_[d] != 1]
            for d in gj:
                if os_[d] == 1:
                    out[d] = self.fresh(1, "broadcast axis")
            in_sizes, out_sizes = [xs[d] for d in ins], [os_[d] for d in outs]
            refined = _refinement(in_sizes, out_sizes)
            if len(ins) > 1 and len(outs) > 1 and refined is not None:
                # (T, B, E) -> (T, B*H, D): split each input axis at the output's boundaries
                # first, then merge: two views whose rules are known
                labels = self.reshape([xl[d] for d in ins], tuple(in_sizes), tuple(refined), op)
                group = self.reshape(labels, tuple(refined), tuple(out_sizes), op)
            else:
                group = self.regroup([xl[d] for d in ins], in_sizes, out_sizes, op, outs)
            for d, lab in zip(outs, group):
                out[d] = lab
        return out

    def regroup(self, labels: list, sizes: list[int], out_sizes: list[int], op: str,
                out_dims: list[int] | None = None) -> list:
        """Labels of ``out_sizes`` dims holding the entries of ``labels`` (row-major);
        ``out_dims`` are their positions in the view's output (to look ahead at their use)."""
        if len(labels) == 1 and len(out_sizes) == 1:
            return [labels[0]]
        if all(self.is_fixed(lab) for lab in labels):
            reasons = {self.reason_of(lab) for lab in labels}
            why = reasons.pop() if len(reasons) == 1 else "merged fixed axes"
            return [self.fresh(s, why) for s in out_sizes]
        if len(labels) == 1 and isinstance(labels[0], Merged) and labels[0].sizes == tuple(out_sizes):
            return list(labels[0].parts)  # a view undoing an earlier merge
        merged = any(isinstance(lab, Merged) for lab in labels)
        if len(out_sizes) == 1 and not merged:
            free = [k for k, lab in enumerate(labels) if not self.is_fixed(lab)]
            joined = self.head_merge(labels) if len(free) == 2 == len(labels) else None
            if joined is not None:
                return [joined]
            if len(free) == 1:
                # one moving axis among fixed ones (channels among positions, heads beside
                # head_dim): each unit's entries repeat once per combination of the axes before
                # it (tiles) and stay together across the axes after it (block)
                k = free[0]
                node_id, block, tiles = self.resolve(labels[k])
                return [(node_id, block * math.prod(sizes[k + 1:]), tiles * math.prod(sizes[:k]))]
            return [Merged(tuple(labels), tuple(sizes), op)]
        if len(labels) == 1 and not merged:
            node = getattr(self, "view_node", None)
            indexed = bool(out_dims) and node is not None and indexed_later(node, out_dims[0])
            split = self.split_axis(labels[0], out_sizes, op, indexed)
            if split is not None:
                return split
        why = f"reshape mixes permutable axes ({op})"
        for lab in labels:
            self.fix(lab, why, op)
        return [self.fresh(s, why) for s in out_sizes]

    def split_axis(self, label: Any, out_sizes: list[int], op: str,
                   first_indexed: bool = False) -> list | None:
        """One axis viewed as several: tiles, then units, then the block's entries.

        first_indexed: the first new dim is later selected or unbound (q, k, v = qkv.unbind(0)):
            it counts copies (tiles) rather than heads.
        Returns None when the view cuts through units in a way no permutation survives.
        """
        node_id, block, tiles = self.resolve(label)
        units = self.g.units[node_id]
        n, i, p = len(out_sizes), 0, 1
        copies = None
        if first_indexed and tiles == 1 and n > 1 and units % out_sizes[0] == 0 \
                and units > out_sizes[0]:
            if block == 1:  # q, k, v = ...unbind(0): each copy may become its own space
                node_id = copies = self.segment(node_id, out_sizes[0], placeholder=True)
            else:
                node_id = self.tile(node_id, out_sizes[0])
            tiles = out_sizes[0]
            units = self.g.units[node_id]
        while i < n and p < tiles:  # leading dims that count whole copies of the layout
            q = p * out_sizes[i]
            if tiles % q == 0:
                p, i = q, i + 1
                continue
            if q % tiles or units % (q // tiles):
                return None
            # the dim covers all copies and cuts the units into q // tiles equal pieces:
            # the units become that many tiles of a coarser space (a fused QKV viewed (3, H, D))
            node_id, tiles = self.tile(node_id, q // tiles), q
            units = self.g.units[node_id]
            p, i = q, i + 1
        if p != tiles:
            return None
        first, u = i, 1
        while i < n and u < units:
            u *= out_sizes[i]
            i += 1
        unit_dims = out_sizes[first:i]
        inner = 1
        if u != units:  # the last unit dim also takes part of each unit's block (C*H x W)
            if len(unit_dims) != 1 or u % units or block % (u // units):
                return None
            inner = u // units
        if math.prod(out_sizes[i:]) * inner != block:
            return None
        out: list = [self.fresh(s, f"copies of a split axis ({op})") for s in out_sizes[:first]]
        if copies is not None and first == 1:
            self.copies[out[0][0]] = copies
        if len(unit_dims) == 1:
            out.append((node_id, inner, 1))
        elif len(unit_dims) == 2 and inner == 1 and block == 1:
            # (H*D) -> (H, D): a heads axis and a within-head axis, both free for now; the
            # node keeps its H*D units and remembers the two (graph/heads.py decides at the end
            # whether the dims inside a head may move or the heads move as blocks)
            out += list(self.head_view(node_id, unit_dims[0], unit_dims[1]))
        elif unit_dims:
            # (H*D1*D2) -> (H, D1, D2): heads move as blocks; the dims inside are pinned
            heads = self.g.new(unit_dims[0], None)
            self.g.coarsen(node_id, heads, math.prod(unit_dims[1:]), 1)
            self.head_nodes.append(heads)
            out.append((heads, 1, 1))
            out += [self.fresh(s, WITHIN_HEAD) for s in unit_dims[1:]]
        out += [self.fresh(s, "spatial positions") for s in out_sizes[i:]]
        return out

    def head_view(self, node_id: int, heads: int, dim: int) -> tuple[Ref, Ref]:
        """Labels (heads, within-head dims) of node ``node_id`` viewed as (heads, dim); a node
        viewed again (q, k, v of one fused projection) gets the same two labels."""
        known = self.head_views.get(node_id)
        if known is not None and self.size_of(known[0]) == heads:
            return known
        labels = ((self.g.new(heads, None), 1, 1), (self.g.new(dim, None), 1, 1))
        self.head_views[node_id] = labels
        self.head_nodes.append(labels[0][0])
        return labels

    def head_merge(self, labels: list) -> Ref | None:
        """(heads, dims) viewed back as one axis of heads * dims units (an attention's output
        read by its output projection): a new node that remembers the two, or None when the
        labels are not a heads axis and a within-head axis of discovered views."""
        if len(labels) != 2 or any(isinstance(lab, (Merged, Param)) for lab in labels):
            return None
        roots = [self.g.find(self.resolve(lab)[0]) for lab in labels]
        views = list(self.head_views.values())
        if not (any(self.g.find(h[0]) == roots[0] for h, _ in views)
                and any(self.g.find(d[0]) == roots[1] for _, d in views)):
            return None
        node = self.g.new(self.size_of(labels[0]) * self.size_of(labels[1]), None)
        self.head_merges[node] = (labels[0], labels[1])
        return node, 1, 1

    def segment(self, node_id: int, k: int, placeholder: bool = False) -> int | list[int]:
        """Split root ``node_id`` into k consecutive pieces that may each move on their own (the
        q, k and v of a fused projection); ``heads.settle_segments`` ties them together again,
        as tiles of one space, unless they became spaces of one attention's heads.

        placeholder: the pieces are still one tensor (a copies axis indexed later): return one
        node standing for every piece until ``copy_pieces`` gives each its own.
        Returns the k piece nodes, or the placeholder.
        """
        pieces = [self.g.new(self.g.units[node_id] // k, None) for _ in range(k)]
        holder = self.g.new(self.g.units[node_id] // k, None) if placeholder else None
        self.segments[node_id] = (pieces, holder)
        if holder is not None:
            self.placeholders[holder] = node_id
            return holder
        return pieces

    def copy_pieces(self, labels: list, d: int, index: int | None) -> list | None:
        """Labels of copy ``index`` (all copies when None) taken along dim ``d``, when ``d``
        counts the pieces of a segmented node (see ``segment``); None otherwise."""
        ref = labels[d]
        holder = self.copies.get(ref[0]) if isinstance(ref, tuple) else None
        if holder is None:
            return None
        pieces = self.segments[self.placeholders[holder]][0]
        out = []
        for i in range(len(pieces)) if index is None else [index]:
            mapping = {(holder, 1, 1): (pieces[i], 1, 1)}
            if holder in self.head_views:
                hc, ic = self.head_views[holder]
                mapping.update(zip((hc, ic), self.head_view(pieces[i], self.size_of(hc),
                                                            self.size_of(ic))))
            out.append([mapping.get(lab, lab) if isinstance(lab, tuple) else lab
                        for j, lab in enumerate(labels) if j != d])
        return out

    def tile(self, node_id: int, k: int) -> int:
        """Make root ``node_id`` k tiles of a new root with units / k units; returns it."""
        coarse = self.g.new(self.g.units[node_id] // k, None)
        self.g.coarsen(node_id, coarse, 1, k)
        return coarse

    def piece(self, label: Any, k: int) -> Ref | None:
        """The label of each of k equal pieces of an axis, or None when units would be cut."""
        if self.is_fixed(label):
            return self.fresh(self.size_of(label) // k, self.reason_of(label))
        node_id, block, tiles = self.resolve(label)
        if tiles % k == 0:
            return node_id, block, tiles // k
        if k % tiles == 0 and self.g.units[node_id] % (k // tiles) == 0:
            return self.tile(node_id, k // tiles), block, 1
        return None

    def pin_all(self, xl: list, os_: tuple[int, ...], op: str) -> list:
        why = f"unsupported reshape ({op})"
        for lab in xl:
            self.fix(lab, why, op)
        return [self.fresh(s, why) for s in os_]

    def h_expand(self, node: fx.Node) -> Any:
        xl, xs = self.lab(node.args[0]), shape_of(node.args[0].meta["val"])
        os_ = shape_of(node.meta["val"])
        off = len(os_) - len(xs)
        return [xl[i - off] if i >= off and xs[i - off] == os_[i] else self.fresh(os_[i], "broadcast axis")
                for i in range(len(os_))]

    def h_transpose(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        xl = list(self.lab(node.args[0]))
        nd = len(xl)
        if op == "t" or op == "numpy_T":
            return xl[::-1]
        if op == "permute":
            return [xl[d % nd] for d in node.args[1]]
        if op == "movedim" and isinstance(node.args[1], int):
            lab = xl.pop(node.args[1] % nd)
            xl.insert(node.args[2] % nd, lab)
            return xl
        if op in ("transpose", "swapaxes", "swapdims") and isinstance(node.args[1], int):
            a, b = node.args[1] % nd, node.args[2] % nd
            xl[a], xl[b] = xl[b], xl[a]
            return xl
        return self.unknown(node, full)

    def h_cat(self, node: fx.Node) -> Any:
        """Concatenation: equal free pieces become tiles of one space; positions stay fixed."""
        full, op = op_names(node.target)
        ts = [t for t in node.args[0] if shape_of(t.meta["val"]) != (0,)]
        os_ = shape_of(node.meta["val"])
        d = int(arg_of(node, "dim", 0)) % len(os_)
        why = f"concatenated along this axis ({full})"
        out: list = []
        for i in range(len(os_)):
            if i == d:
                out.append(self.cat_axis([self.lab(t)[i] for t in ts] if op == "cat" else None,
                                         os_[i], why, full))
            else:
                src = i if op == "cat" or i < d else i - 1
                first = self.lab(ts[0])[src]
                for t in ts[1:]:
                    self.union(first, self.lab(t)[src], full)
                out.append(first)
        return out

    def cat_axis(self, parts: list | None, size: int, why: str, op: str) -> Any:
        if parts is None:  # stack: a new axis that counts the inputs
            return self.fresh(size, why)
        if all(self.is_fixed(p) for p in parts):
            # a table built from constants (a rotary table: cat(freqs, freqs)) stays a constant
            # so that what it is combined with later can say so
            constant = all(self.reason_of(p) == "constant tensor" for p in parts)
            return self.fresh(size, "constant tensor" if constant else why)
        sizes = {self.size_of(p) for p in parts}
        if len(sizes) == 1:
            # the same permutation on every piece (a restriction when they differed) keeps the
            # concatenation a stack of equal layouts: tiles of one space
            for p in parts[1:]:
                self.union(parts[0], p, op)
            if not self.is_fixed(parts[0]):
                node_id, block, tiles = self.resolve(parts[0])
                return node_id, block, tiles * len(parts)
        for p in parts:
            self.fix(p, why, op)
        return self.fresh(size, why)

    def h_split(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        xl = self.lab(node.args[0])
        d = int(arg_of(node, "dim", 0)) % len(xl)
        val = node.meta["val"]
        why = f"split along this axis ({full})"
        sizes = [shape_of(v)[d] for v in val]
        if op == "unbind":
            pieces = self.copy_pieces(xl, d, None)
            if pieces is not None and len(pieces) == len(val):
                return tuple(pieces)
            self.fix(xl[d], why, full)
            return tuple(list(xl[:d]) + list(xl[d + 1:]) for _ in val)
        if len(val) == 1:
            return (list(xl),)
        if len(set(sizes)) == 1 and not self.is_fixed(xl[d]) and not isinstance(xl[d], Merged) \
                and self.resolve(xl[d])[1:] == (1, 1):
            # q, k, v = qkv.chunk(3, -1): one piece each, tied again at the end unless they
            # become spaces of one attention's heads
            node_id = self.resolve(xl[d])[0]
            if self.g.units[node_id] % len(val) == 0:
                return tuple(list(xl[:d]) + [(p, 1, 1)] + list(xl[d + 1:])
                             for p in self.segment(node_id, len(val)))
        label = self.piece(xl[d], len(val)) if len(set(sizes)) == 1 else None
        if label is None:
            self.fix(xl[d], why, full)
        pieces = []
        for s in sizes:
            labels = list(xl)
            labels[d] = label if label is not None else self.fresh(s, why)
            pieces.append(labels)
        return tuple(pieces)

    def h_slice(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        x = node.args[0]
        xl, xs = list(self.lab(x)), shape_of(x.meta["val"])
        d = int(arg_of(node, "dim", 0)) % len(xl)
        why = f"sliced along this axis ({full})"
        if op == "select":
            index = arg_of(node, "index")
            if isinstance(index, int):
                pieces = self.copy_pieces(xl, d, index % xs[d])
                if pieces is not None:
                    return pieces[0]
            self.fix(xl[d], why, full)
            return xl[:d] + xl[d + 1:]
        length = shape_of(node.meta["val"])[d]
        step = int(arg_of(node, "step", 1) or 1)
        if length == xs[d] and step == 1:
            return xl  # a full slice is the identity
        start = arg_of(node, "start", 0)
        start = 0 if start is None else start
        if isinstance(start, int) and start < 0:
            start += xs[d]
        label = None
        if step == 1 and isinstance(start, int) and length > 0 and xs[d] % length == 0 \
                and start % length == 0:
            label = self.piece(xl[d], xs[d] // length)  # one of k equal pieces (fused QKV)
        if label is None:
            self.fix(xl[d], why, full)
            label = self.fresh(length, why)
        xl[d] = label
        return xl

    def h_reorder(self, node: fx.Node) -> Any:
        """flip / roll: a fixed reordering of entries; harmless along positions only."""
        full, _ = op_names(node.target)
        xl = list(self.lab(node.args[0]))
        dims = arg_of(node, "dims", [])
        for d in ([dims] if isinstance(dims, int) else dims) or range(len(xl)):
            self.fix(xl[d], f"reordered along this axis ({full})", full)
        return xl

    def h_pad(self, node: fx.Node) -> Any:
        full, _ = op_names(node.target)
        xl = list(self.lab(node.args[0]))
        pad = list(arg_of(node, "pad", []))
        os_ = shape_of(node.meta["val"])
        for p in range(len(pad) // 2):
            d = len(xl) - 1 - p
            if pad[2 * p] or pad[2 * p + 1]:
                self.fix(xl[d], f"padded along this axis ({full})", full)
                xl[d] = self.fresh(os_[d], "spatial positions")
        return xl
