"""Label rules for entry-wise ops, normalisations, reductions, pooling and constants.

Entry-wise ops broadcast their operands from the right and share labels where sizes agree; a
norm's parameters join the normalised axes; a reduction drops its axes; pooling keeps channels
and renews positions. A constant that varies along an axis (a rotary table, an ALiBi slope) pins
what it is combined with; a uniform one (zeros, ones, a fill value) moves with anything.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import torch
from torch import fx

from .labels import NORM_ARGS, arg_of, module_path, op_names, shape_of, tensor_nodes

CONSTANT = "constant tensor"


class PointwiseRules:
    """Mix-in of the tracer (``discover._Tracer``): rules for entry-wise and reducing ops."""

    def h_norm(self, node: fx.Node) -> Any:
        """Batch/instance/layer/RMS/group norm: parameters join the normalised axes."""
        full, op = op_names(node.target)
        x = node.args[0]
        xl, xs = self.lab(x), shape_of(x.meta["val"])
        if "layer_norm" in op or "rms_norm" in op:
            k = len(arg_of(node, "normalized_shape", [xs[-1]]))
            axes = list(range(len(xs) - k, len(xs)))
        else:
            axes = [1 if len(xs) > 1 else 0]
        if "group_norm" in op:
            groups = int(arg_of(node, "num_groups", arg_of(node, "group", 1)))
            if groups not in (1, xs[axes[0]]):
                self.fix(xl[axes[0]], f"group norm over {groups} channel groups", full)
        for name in NORM_ARGS:
            p = arg_of(node, name)
            if isinstance(p, fx.Node):
                for i, ax in enumerate(axes):
                    self.union(self.lab(p)[i], xl[ax], full)
        val = node.meta["val"]
        if not isinstance(val, (tuple, list)):
            return list(xl)
        extra = []
        for v in val[1:]:  # saved statistics: per channel, or per sample
            vs = shape_of(v) if isinstance(v, torch.Tensor) else None
            if vs == (xs[axes[0]],) and len(axes) == 1:
                extra.append([xl[axes[0]]])
            elif vs is not None and len(vs) == len(xs):
                extra.append([xl[i] if vs[i] == xs[i] and i not in axes else self.fresh(vs[i], "statistic")
                              for i in range(len(vs))])
            else:
                extra.append(self.fresh_like(v, "statistic"))
        return tuple([list(xl)] + extra)

    def h_prelu(self, node: fx.Node) -> Any:
        """PReLU: one slope per channel (axis 1, or 0 for a 1-D input) or one for all."""
        x, w = node.args[0], node.args[1]
        xl, ws = self.lab(x), shape_of(w.meta["val"])
        if ws != (1,) and ws != ():
            self.union(self.lab(w)[0], xl[1 if len(xl) > 1 else 0], "prelu")
        return list(xl)

    def h_elementwise(self, node: fx.Node) -> Any:
        operands = [(self.lab(t), shape_of(t.meta["val"])) for t in tensor_nodes((node.args, node.kwargs))]
        val = node.meta["val"]
        first = val[0] if isinstance(val, (tuple, list)) else val
        where, module = op_names(node.target)[0], module_path(node)
        out = self.broadcast(operands, shape_of(first), f"{where} in {module}" if module else where)
        return tuple(list(out) for _ in val) if isinstance(val, (tuple, list)) else out

    def h_like(self, node: fx.Node) -> Any:
        return list(self.lab(node.args[0]))

    def h_uniform(self, node: fx.Node) -> Any:
        """zeros / ones / full / empty: every entry alike, so any permutation leaves it as it is."""
        return self.fresh_like(node.meta.get("val"), None)

    def h_getitem(self, node: fx.Node) -> Any:
        src, idx = node.args
        labels = self.lab(src)
        if isinstance(labels, tuple) and isinstance(idx, int):
            return labels[idx]
        return self.unknown(node, "getitem")

    def h_reduce(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        xl = self.lab(node.args[0])
        nd = len(xl)
        dim = arg_of(node, "dim")
        dims = set(range(nd)) if dim is None or dim == [] else {
            d % max(nd, 1) for d in ([dim] if isinstance(dim, int) else dim)}
        keep = bool(arg_of(node, "keepdim", False))
        indices = op in ("argmax", "argmin") or (
            full in ("aten.max.dim", "aten.min.dim") and any(u.target is operator.getitem and u.args[1] == 1
                                                   for u in node.users))
        if indices:  # the result names positions along the axis: it must not move
            for d in dims:
                self.fix(xl[d], f"indices along this axis ({full})", full)
        out = [self.fresh(1, "broadcast axis") if i in dims else lab
               for i, lab in enumerate(xl) if keep or i not in dims]
        return (out, list(out)) if isinstance(node.meta["val"], (tuple, list)) else out

    def h_pool(self, node: fx.Node) -> Any:
        op = op_names(node.target)[1]
        match = re.search(r"(\d)d", op)
        k = int(match.group(1)) if match else 2
        xl = self.lab(node.args[0])
        val = node.meta["val"]
        first = val[0] if isinstance(val, (tuple, list)) else val
        out = list(xl[:len(xl) - k]) + [self.fresh(s, "spatial positions") for s in shape_of(first)[-k:]]
        return tuple(list(out) for _ in val) if isinstance(val, (tuple, list)) else out
