"""What each ATen operation does to the labels of its tensors' axes (``discover.py`` drives it).

Each ``h_*`` rule returns the output's labels (a list per tensor output) after constraining its
inputs' labels through the tracer (union, fix, fresh). ``HANDLERS`` maps ATen op names to rules.
A rule may raise on argument forms it does not know; the tracer then treats the op as unknown.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from .labels import (NORM_ARGS, NORM_OPS, Merged, Param, arg_of, op_names, shape_of,
                     tensor_nodes)


class OpRules:
    """Mix-in of the tracer: one method per family of ATen operations."""

    def h_linear(self, node: fx.Node) -> Any:
        x, w = node.args[0], node.args[1]
        bias = arg_of(node, "bias")
        xl, wl = self.lab(x), self.lab(w)
        self.union(wl[1], xl[-1], "linear")
        if isinstance(bias, fx.Node):
            self.union(self.lab(bias)[0], wl[0], "linear bias")
        self.add_layer(node, "linear", self.key_of(w), self.key_of(bias), wl[0], wl[1])
        return list(xl[:-1]) + [wl[0]]

    def h_conv(self, node: fx.Node) -> Any:
        x, w = node.args[0], node.args[1]
        bias = arg_of(node, "bias")
        full, op = op_names(node.target)
        transposed = bool(arg_of(node, "transposed", False)) or "transpose" in op
        groups = int(arg_of(node, "groups", 1))
        xl, wl = self.lab(x), self.lab(w)
        xs, ws, os_ = shape_of(x.meta["val"]), shape_of(w.meta["val"]), shape_of(node.meta["val"])
        k = len(ws) - 2
        c = len(xs) - k - 1
        inp = wl[0] if transposed else wl[1]
        if groups == 1:
            self.union(inp, xl[c], full)
            out = wl[1] if transposed else wl[0]
        elif not transposed and groups == xs[c]:
            # depthwise: output channel c*m+j reads only input channel c: same space, block m
            node_id, block = self.resolve(xl[c])
            out, inp = (node_id, block * (ws[0] // groups)), xl[c]
            self.union(wl[0], out, full)
        else:
            why = f"grouped convolution (groups={groups})"
            self.fix(xl[c], why, full)
            out, inp = self.fresh(os_[c], why), xl[c]
            self.union(wl[0], xl[c] if transposed else out, full)
        if isinstance(bias, fx.Node):
            self.union(self.lab(bias)[0], out, full)
        kind = f"conv_transpose{k}d" if transposed else f"conv{k}d"
        self.add_layer(node, kind, self.key_of(w), self.key_of(bias), out, inp, tuple(ws[2:]))
        return (list(xl[:c]) + [out]
                + [self.fresh(s, "spatial positions") for s in os_[c + 1:]])

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

    def h_elementwise(self, node: fx.Node) -> Any:
        operands = [(self.lab(t), shape_of(t.meta["val"])) for t in tensor_nodes((node.args, node.kwargs))]
        val = node.meta["val"]
        first = val[0] if isinstance(val, (tuple, list)) else val
        out = self.broadcast(operands, shape_of(first), op_names(node.target)[0])
        return tuple(list(out) for _ in val) if isinstance(val, (tuple, list)) else out

    def h_like(self, node: fx.Node) -> Any:
        return list(self.lab(node.args[0]))

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

    def h_reshape(self, node: fx.Node) -> Any:
        x = node.args[0]
        return self.reshape(self.lab(x), shape_of(x.meta["val"]), shape_of(node.meta["val"]),
                            op_names(node.target)[0])

    def reshape(self, xl: list, xs: tuple[int, ...], os_: tuple[int, ...], op: str) -> list:
        """Labels through a view: merged dims carry the first's space with a block, or pin."""
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
            for d, lab in zip(outs, self.regroup([xl[d] for d in ins], [xs[d] for d in ins],
                                                 [os_[d] for d in outs], op)):
                out[d] = lab
        return out

    def regroup(self, labels: list, sizes: list[int], out_sizes: list[int], op: str) -> list:
        if len(labels) == 1 and len(out_sizes) == 1:
            return [labels[0]]
        if all(self.is_fixed(lab) for lab in labels):
            reasons = {self.reason_of(lab) for lab in labels}
            why = reasons.pop() if len(reasons) == 1 else "merged fixed axes"
            return [self.fresh(s, why) for s in out_sizes]
        if len(labels) == 1 and isinstance(labels[0], Merged) and labels[0].sizes == tuple(out_sizes):
            return list(labels[0].parts)  # a view undoing an earlier merge
        merged = any(isinstance(lab, Merged) for lab in labels)
        if len(out_sizes) == 1 and not merged and all(self.is_fixed(lab) for lab in labels[1:]):
            node_id, block = self.resolve(labels[0])  # C x H x W -> C*H*W: channel owns H*W entries
            return [(node_id, block * math.prod(sizes[1:]))]
        if len(out_sizes) == 1 and not merged:
            return [Merged(tuple(labels), tuple(sizes), op)]
        if len(labels) == 1 and not merged:
            node_id, block = self.resolve(labels[0])
            rest = math.prod(out_sizes[1:])
            if block % rest == 0 and out_sizes[0] * rest == sizes[0]:  # C*H*W -> C x H x W
                return [(node_id, block // rest)] + [self.fresh(s, "spatial positions")
                                                     for s in out_sizes[1:]]
        why = f"reshape mixes permutable axes ({op})"
        for lab in labels:
            self.fix(lab, why, op)
        return [self.fresh(s, why) for s in out_sizes]

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

    def h_matmul(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        args = list(node.args)
        bias = args.pop(0) if op.startswith(("addmm", "baddbmm", "addmv", "addbmm")) else None
        a, b = args[0], args[1]
        al, bl = self.lab(a), self.lab(b)
        as_, bs = shape_of(a.meta["val"]), shape_of(b.meta["val"])
        os_ = shape_of(node.meta["val"])
        if len(as_) == 1 and len(bs) == 1:
            self.union(al[0], bl[0], full)
            out: list = []
        elif len(bs) == 1:
            self.union(al[-1], bl[0], full)
            out = list(al[:-1])
        elif len(as_) == 1:
            self.union(al[0], bl[-2], full)
            out = list(bl[:-2]) + [bl[-1]]
        else:
            self.union(al[-1], bl[-2], full)
            batch = self.broadcast([(al[:-2], as_[:-2]), (bl[:-2], bs[:-2])], os_[:-2], full)
            out = batch + [al[-2], bl[-1]]
        # x @ W.T (+ b): a decomposed linear layer; W.T may have been expanded for a bmm
        w = bl[-1] if len(bl) >= 2 else None
        if isinstance(w, Param) and w.dim == 0 and bl[-2] == Param(w.key, 1) \
                and len(self.state_shapes[w.key]) == 2:
            self.add_layer(node, "linear", w.key, self.key_of(bias), w, bl[-2])
        if isinstance(bias, fx.Node):
            out = self.broadcast([(out, os_), (self.lab(bias), shape_of(bias.meta["val"]))], os_, full)
        return out

    def h_attention(self, node: fx.Node) -> Any:
        q, k, v = node.args[:3]
        ql, kl, vl = self.lab(q), self.lab(k), self.lab(v)
        qs, ks, vs = (shape_of(t.meta["val"]) for t in (q, k, v))
        self.union(ql[-1], kl[-1], "attention scores")
        self.union(kl[-2], vl[-2], "attention values")
        batch = self.broadcast([(ql[:-2], qs[:-2]), (kl[:-2], ks[:-2]), (vl[:-2], vs[:-2])],
                               shape_of(node.meta["val"])[:-2], "attention")
        mask = arg_of(node, "attn_mask")
        if isinstance(mask, fx.Node):
            scores = batch + [ql[-2], kl[-2]]
            self.broadcast([(scores, (*qs[:-1], ks[-2])), (self.lab(mask), shape_of(mask.meta["val"]))],
                           (*qs[:-1], ks[-2]), "attention mask")
        return batch + [ql[-2], vl[-1]]

    def h_embedding(self, node: fx.Node) -> Any:
        w, idx = node.args[0], node.args[1]
        wl = self.lab(w)
        self.fix(wl[0], "embedding rows (indexed by token ids)")
        return list(self.lab(idx)) + [wl[1]]

    def h_cat(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        ts = [t for t in node.args[0] if shape_of(t.meta["val"]) != (0,)]
        os_ = shape_of(node.meta["val"])
        d = int(arg_of(node, "dim", 0)) % len(os_)
        why = f"concatenated along this axis ({full})"
        out: list = []
        for i in range(len(os_)):
            if i == d:
                if op == "cat":
                    for t in ts:
                        self.fix(self.lab(t)[i], why, full)
                out.append(self.fresh(os_[i], why))
            else:
                src = i if op == "cat" or i < d else i - 1
                first = self.lab(ts[0])[src]
                for t in ts[1:]:
                    self.union(first, self.lab(t)[src], full)
                out.append(first)
        return out

    def h_split(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        xl = self.lab(node.args[0])
        d = int(arg_of(node, "dim", 0)) % len(xl)
        val = node.meta["val"]
        why = f"split along this axis ({full})"
        if len(val) > 1 or op == "unbind":
            self.fix(xl[d], why, full)
        pieces = []
        for v in val:
            labels = list(xl)
            if op == "unbind":
                labels.pop(d)
            elif len(val) > 1:
                labels[d] = self.fresh(shape_of(v)[d], why)
            pieces.append(labels)
        return tuple(pieces)

    def h_slice(self, node: fx.Node) -> Any:
        full, op = op_names(node.target)
        x = node.args[0]
        xl, xs = list(self.lab(x)), shape_of(x.meta["val"])
        d = int(arg_of(node, "dim", 0)) % len(xl)
        why = f"sliced along this axis ({full})"
        if op == "select":
            self.fix(xl[d], why, full)
            return xl[:d] + xl[d + 1:]
        if shape_of(node.meta["val"])[d] == xs[d] and int(arg_of(node, "step", 1) or 1) == 1:
            return xl  # a full slice is the identity
        self.fix(xl[d], why, full)
        xl[d] = self.fresh(shape_of(node.meta["val"])[d], why)
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


def handler_table() -> dict[str, Callable[[Any, fx.Node], Any]]:
    t = OpRules
    groups: dict[Callable[[Any, fx.Node], Any], str] = {
        t.h_linear: "linear",
        t.h_conv: "conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d "
                  "conv_transpose3d",
        t.h_norm: " ".join(sorted(NORM_OPS)),
        t.h_elementwise: "add sub mul div rsub maximum minimum max.other min.other pow where "
                         "masked_fill eq ne lt le gt ge logical_and logical_or bitwise_and bitwise_or "
                         "addcmul addcdiv lerp fmod remainder atan2 copy floor_divide true_divide "
                         "relu relu_ gelu gelu_ sigmoid tanh silu silu_ leaky_relu hardtanh hardtanh_ "
                         "elu selu celu softplus mish hardswish hardsigmoid relu6 dropout "
                         "feature_dropout alpha_dropout native_dropout clone contiguous alias detach "
                         "lift_fresh_copy _to_copy to abs neg exp log log1p expm1 sqrt rsqrt "
                         "reciprocal square sin cos erf sign clamp clamp_min clamp_max softmax "
                         "_softmax log_softmax _log_softmax logical_not round floor ceil trunc "
                         "nan_to_num fill",
        t.h_like: "zeros_like ones_like empty_like full_like rand_like randn_like type_as",
        t.h_getitem: "getitem",
        t.h_reduce: "mean sum amax amin var std prod logsumexp linalg_vector_norm norm any all "
                    "max.dim min.dim max.default min.default argmax argmin count_nonzero",
        t.h_pool: "max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d "
                  "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d "
                  "_adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d "
                  "max_pool2d_with_indices max_pool3d_with_indices upsample_nearest1d "
                  "upsample_nearest2d upsample_nearest3d upsample_bilinear2d upsample_bicubic2d "
                  "upsample_linear1d _upsample_nearest_exact2d",
        t.h_reshape: "view reshape _unsafe_view _reshape_alias view_copy flatten unflatten squeeze "
                     "unsqueeze view_as reshape_as",
        t.h_expand: "expand expand_as broadcast_to expand_copy",
        t.h_transpose: "transpose swapaxes swapdims permute t numpy_T movedim",
        t.h_matmul: "mm bmm matmul addmm baddbmm addmv mv dot",
        t.h_attention: "scaled_dot_product_attention",
        t.h_embedding: "embedding",
        t.h_cat: "cat concat concatenate stack",
        t.h_split: "split split_with_sizes chunk unbind tensor_split",
        t.h_slice: "slice narrow select",
        t.h_pad: "constant_pad_nd pad",
        t.h_reorder: "flip roll",
    }
    return {name: fn for fn, names in groups.items() for name in names.split()}


# ATen op name -> rule, built once at import (discover looks ops up here).
HANDLERS = handler_table()
