"""Discover a model's permutation spaces from its exported graph (torch.export, ATen ops).

Every axis of every tensor in the graph gets a *label*: a union-find node plus a ``block`` (how
many consecutive entries each unit of the node owns; a flattened C x H x W map has block H*W on
its channel space). Operations constrain labels: a linear layer reads its input's last axis with
its weight's axis 1 (union) and writes a new space on its axis 0; a residual add unions both
operands' axes; a norm's parameters join the normalised axis. Labels of the network input, the
class output, spatial positions and anything an unknown op touches are *fixed* (with a reason).
Parameter and buffer axes stay unbound until an op constrains them; an axis never constrained
(a conv kernel's spatial axes) is not permutable (``None`` in ``PermutationSpec.axes``).
At the end every union-find group holding a state-tensor axis becomes one ``Space``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from ..errors import MalError
from ..io.model import LoadedModel
from .spec import Axis, Layer, PermutationSpec, Space

Ref = tuple[int, int]  # (union-find node, block)

_NORM_OPS = {"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
             "_native_batch_norm_legit_functional", "native_batch_norm", "instance_norm",
             "layer_norm", "native_layer_norm", "rms_norm", "group_norm", "native_group_norm"}
_NORM_ARGS = ("weight", "bias", "running_mean", "running_var")
_IGNORED = {"_assert_tensor_metadata", "_assert_async", "_assert_scalar", "_functional_assert_async",
            "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "sym_constrain_range",
            "sym_constrain_range_for_size"}


@dataclass(frozen=True)
class _Param:
    """Axis ``dim`` of state tensor ``key``; bound to a Ref the first time an op constrains it."""

    key: str
    dim: int


@dataclass(frozen=True)
class _Merged:
    """Axes merged by a view that no Axis(space, block) describes (batch x channels, ...).

    Ops that only carry an axis along (a linear's leading axes) keep it; a view that splits it
    back recovers the parts; anything else pins the parts (``_Tracer.resolve``).
    """

    parts: tuple[Any, ...]  # labels, outermost first
    sizes: tuple[int, ...]
    op: str  # the view that merged them


@dataclass
class _RawLayer:
    name: str
    kind: str
    weight: str
    bias: str | None
    node: fx.Node
    out: Any
    inp: Any
    kernel: tuple[int, ...]


class _Groups:
    """Union-find over labels; a root carries the unit count and, when fixed, the reason."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.units: list[int] = []
        self.reason: list[str | None] = []

    def new(self, units: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.units.append(units)
        self.reason.append(reason)
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def fix(self, a: int, reason: str) -> bool:
        """Mark a's group fixed; True when it was free before."""
        root = self.find(a)
        if self.reason[root] is None:
            self.reason[root] = reason
            return True
        return False

    def merge(self, a: int, b: int) -> None:
        ra, rb = sorted((self.find(a), self.find(b)))
        if ra != rb:
            self.parent[rb] = ra
            self.reason[ra] = self.reason[ra] or self.reason[rb]


def _shape(val: Any) -> tuple[int, ...]:
    out = []
    for s in val.shape:
        try:
            out.append(int(s))
        except (RuntimeError, TypeError, ValueError):  # unbacked symbolic size: unknown
            out.append(-1)
    return tuple(out)


def _op_names(target: Any) -> tuple[str, str]:
    """("aten.max.dim", "max") for an ATen op; the target's text and name otherwise."""
    text = str(target)
    if isinstance(target, torch._ops.OpOverload) and text.startswith("aten."):
        return text, text.split(".")[1]
    return text, getattr(target, "__name__", text)


def _arg(node: fx.Node, name: str, default: Any = None) -> Any:
    """Argument ``name`` of an ATen call, positional or keyword, by the op's schema."""
    if name in node.kwargs:
        return node.kwargs[name]
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        for i, a in enumerate(schema.arguments):
            if a.name == name:
                return node.args[i] if i < len(node.args) and not a.kwarg_only else default
    return default


def _tensor_nodes(obj: Any) -> Iterator[fx.Node]:
    if isinstance(obj, fx.Node):
        if isinstance(obj.meta.get("val"), torch.Tensor):
            yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensor_nodes(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensor_nodes(o)


class _Tracer:
    """Walks the graph once, labelling every tensor axis."""

    def __init__(self, ep: Any, state_keys: set[str]) -> None:
        self.g = _Groups()
        self.labels: dict[fx.Node, Any] = {}
        self.bound: dict[tuple[str, int], Ref] = {}
        self.state_shapes: dict[str, tuple[int, ...]] = {}
        self.state_node: dict[fx.Node, str] = {}
        self.unsupported: list[str] = []
        self.layers: list[_RawLayer] = []
        self.ep = ep
        kinds = {s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
        for node in ep.graph.nodes:
            if node.op != "placeholder":
                continue
            val = node.meta.get("val")
            spec = kinds.get(node.name)
            kind = spec.kind.name if spec is not None else "USER_INPUT"
            if not isinstance(val, torch.Tensor):
                self.labels[node] = None
            elif kind in ("PARAMETER", "BUFFER") and spec.target in state_keys:
                self.state_node[node] = spec.target
                self.state_shapes[spec.target] = _shape(val)
                self.labels[node] = [_Param(spec.target, d) for d in range(val.dim())]
            elif kind == "USER_INPUT":
                self.labels[node] = self.fresh_like(val, "network input")
            else:  # constants, non-persistent buffers: never permuted, so they pin what they touch
                self.labels[node] = self.fresh_like(val, "constant tensor")

    # ----- labels -----
    def fresh(self, size: int, reason: str | None) -> Ref:
        return (self.g.new(size, reason), 1)

    def fresh_like(self, val: Any, reason: str) -> Any:
        if isinstance(val, torch.Tensor):
            return [self.fresh(s, reason) for s in _shape(val)]
        if isinstance(val, (list, tuple)):
            return tuple(self.fresh_like(v, reason) for v in val)
        return None

    def resolve(self, label: Any) -> Ref:
        if isinstance(label, _Merged):  # used as one axis: its parts cannot move
            why = self.reason_of(label) if self.is_fixed(label) else \
                f"reshape mixes permutable axes ({label.op})"
            for part in label.parts:
                self.fix(part, why, label.op)
            total = 1
            for size in label.sizes:
                total *= size
            return self.fresh(total, why)
        if isinstance(label, _Param):
            ref = self.bound.get((label.key, label.dim))
            if ref is None:
                ref = self.fresh(self.state_shapes[label.key][label.dim], None)
                self.bound[(label.key, label.dim)] = ref
            return ref
        return label

    def is_fixed(self, label: Any) -> bool:
        if isinstance(label, _Merged):
            return all(self.is_fixed(part) for part in label.parts)
        return self.reason_of(label) is not None

    def reason_of(self, label: Any) -> str | None:
        if isinstance(label, _Merged):
            return self.reason_of(label.parts[0])
        if isinstance(label, _Param) and (label.key, label.dim) not in self.bound:
            return None  # unconstrained so far; looking must not bind it
        return self.g.reason[self.g.find(self.resolve(label)[0])]

    def size_of(self, label: Any) -> int:
        node, block = self.resolve(label)
        return self.g.units[self.g.find(node)] * block

    def fix(self, label: Any, reason: str, op: str | None = None) -> None:
        """Fix label's group; ``op`` is recorded as unsupported when this pinned a free space."""
        if self.g.fix(self.resolve(label)[0], reason) and op is not None:
            self.note(op)

    def note(self, op: str) -> None:
        if op not in self.unsupported:
            self.unsupported.append(op)

    def union(self, a: Any, b: Any, where: str) -> None:
        """The axes labelled a and b must be permuted identically, entry by entry."""
        if isinstance(a, _Merged) and isinstance(b, _Merged) and a.sizes == b.sizes:
            for pa, pb in zip(a.parts, b.parts):
                self.union(pa, pb, where)
            return
        for x, y in ((a, b), (b, a)):
            if isinstance(x, _Param) and (x.key, x.dim) not in self.bound:
                size = self.state_shapes[x.key][x.dim]
                ref = self.resolve(y)
                if size == self.size_of(ref):
                    self.bound[(x.key, x.dim)] = ref
                    return
        ra, rb = self.resolve(a), self.resolve(b)
        na, nb = self.g.find(ra[0]), self.g.find(rb[0])
        if na == nb and ra[1] == rb[1]:
            return
        if ra[1] != rb[1] or self.g.units[na] != self.g.units[nb]:
            # one permutation cannot act on both with different unit layouts: pin both
            why = self.g.reason[na] or self.g.reason[nb] or f"incompatible unit layouts at {where}"
            self.g.fix(na, why)
            self.g.fix(nb, why)
            return
        self.g.merge(na, nb)

    def lab(self, arg: Any) -> Any:
        return self.labels.get(arg) if isinstance(arg, fx.Node) else None

    def broadcast(self, operands: list[tuple[list, tuple[int, ...]]], out_shape: tuple[int, ...],
                  where: str) -> list:
        """Align operands from the right; equal non-1 sizes share a label (union)."""
        out: list = []
        for k in range(len(out_shape), 0, -1):
            cands = [(lab[-k], shp[-k]) for lab, shp in operands if len(shp) >= k]
            full = [lab for lab, s in cands if s == out_shape[-k] and s != 1]
            for other in full[1:]:
                self.union(full[0], other, where)
            if full:
                out.append(full[0])
            elif cands and out_shape[-k] == 1:
                out.append(cands[0][0])
            else:
                out.append(self.fresh(out_shape[-k], "broadcast axis"))
        return out

    # ----- driver -----
    def run(self) -> None:
        for node in self.ep.graph.nodes:
            if node.op == "output":
                self.output(node)
            elif node.op == "call_function":
                self.labels[node] = self.call(node)
            elif node.op != "placeholder":
                self.labels[node] = self.unknown(node, f"{node.op} {node.target}")

    def output(self, node: fx.Node) -> None:
        outs = list(node.args[0]) if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
        specs = list(self.ep.graph_signature.output_specs)
        for i, out in enumerate(outs):
            if i < len(specs) and specs[i].kind.name != "USER_OUTPUT":
                continue  # buffer mutations of a training-mode program are not outputs
            for t in _tensor_nodes(out):
                for label in self.lab(t) or []:
                    self.fix(label, "class output")

    def call(self, node: fx.Node) -> Any:
        if node.target is operator.getitem:
            handler: Callable[[_Tracer, fx.Node], Any] | None = _Tracer.h_getitem
            full = "getitem"
        elif isinstance(node.target, torch._ops.OpOverload) and str(node.target).startswith("aten."):
            full, op = _op_names(node.target)
            if op in _IGNORED:
                return self.fresh_like(node.meta.get("val"), "constant tensor")
            handler = _HANDLERS.get(full[len("aten."):]) or _HANDLERS.get(op)
        else:  # other namespaces, Python callables on sizes, higher-order ops
            handler, full = None, str(node.target)
        if handler is None:
            return self.unknown(node, str(node.target))
        try:
            labels = handler(self, node)
        except (IndexError, KeyError, TypeError, ValueError, AttributeError):
            labels = None  # an argument form the handler does not know
        if self.matches(labels, node.meta.get("val")):
            return labels
        return self.unknown(node, full)  # a handler's guess did not fit: be safe

    def matches(self, labels: Any, val: Any) -> bool:
        if isinstance(val, torch.Tensor):
            return isinstance(labels, list) and len(labels) == val.dim()
        if isinstance(val, (list, tuple)):
            return isinstance(labels, tuple) and len(labels) == len(val) and all(
                self.matches(lab, v) for lab, v in zip(labels, val))
        return True

    def unknown(self, node: fx.Node, name: str) -> Any:
        """An op we cannot reason about pins every axis it touches."""
        tensors = list(_tensor_nodes((node.args, node.kwargs)))
        for t in tensors:
            labels = self.lab(t)
            for label in labels if isinstance(labels, list) else []:
                self.fix(label, f"unsupported op {name}")
        if tensors:
            self.note(name)
        return self.fresh_like(node.meta.get("val"), f"unsupported op {name}" if tensors
                               else "constant tensor")

    def key_of(self, arg: Any) -> str | None:
        return self.state_node.get(arg) if isinstance(arg, fx.Node) else None

    def add_layer(self, node: fx.Node, kind: str, key: str | None, bias_key: str | None, out: Any,
                  inp: Any, kernel: tuple[int, ...] = ()) -> None:
        if key is None or any(lay.weight == key for lay in self.layers):
            return  # a shared weight is one layer, named after its first use
        name = key.rsplit(".", 1)[0] if "." in key else key
        self.layers.append(_RawLayer(name, kind, key, bias_key, node, out, inp, kernel))

    # ----- handlers -----
    def h_linear(self, node: fx.Node) -> Any:
        x, w = node.args[0], node.args[1]
        bias = _arg(node, "bias")
        xl, wl = self.lab(x), self.lab(w)
        self.union(wl[1], xl[-1], "linear")
        if isinstance(bias, fx.Node):
            self.union(self.lab(bias)[0], wl[0], "linear bias")
        self.add_layer(node, "linear", self.key_of(w), self.key_of(bias), wl[0], wl[1])
        return list(xl[:-1]) + [wl[0]]

    def h_conv(self, node: fx.Node) -> Any:
        x, w = node.args[0], node.args[1]
        bias = _arg(node, "bias")
        full, op = _op_names(node.target)
        transposed = bool(_arg(node, "transposed", False)) or "transpose" in op
        groups = int(_arg(node, "groups", 1))
        xl, wl = self.lab(x), self.lab(w)
        xs, ws, os_ = _shape(x.meta["val"]), _shape(w.meta["val"]), _shape(node.meta["val"])
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
        full, op = _op_names(node.target)
        x = node.args[0]
        xl, xs = self.lab(x), _shape(x.meta["val"])
        if "layer_norm" in op or "rms_norm" in op:
            k = len(_arg(node, "normalized_shape", [xs[-1]]))
            axes = list(range(len(xs) - k, len(xs)))
        else:
            axes = [1 if len(xs) > 1 else 0]
        if "group_norm" in op:
            groups = int(_arg(node, "num_groups", _arg(node, "group", 1)))
            if groups not in (1, xs[axes[0]]):
                self.fix(xl[axes[0]], f"group norm over {groups} channel groups", full)
        for name in _NORM_ARGS:
            p = _arg(node, name)
            if isinstance(p, fx.Node):
                for i, ax in enumerate(axes):
                    self.union(self.lab(p)[i], xl[ax], full)
        val = node.meta["val"]
        if not isinstance(val, (tuple, list)):
            return list(xl)
        extra = []
        for v in val[1:]:  # saved statistics: per channel, or per sample
            vs = _shape(v) if isinstance(v, torch.Tensor) else None
            if vs == (xs[axes[0]],) and len(axes) == 1:
                extra.append([xl[axes[0]]])
            elif vs is not None and len(vs) == len(xs):
                extra.append([xl[i] if vs[i] == xs[i] and i not in axes else self.fresh(vs[i], "statistic")
                              for i in range(len(vs))])
            else:
                extra.append(self.fresh_like(v, "statistic"))
        return tuple([list(xl)] + extra)

    def h_elementwise(self, node: fx.Node) -> Any:
        operands = [(self.lab(t), _shape(t.meta["val"])) for t in _tensor_nodes((node.args, node.kwargs))]
        val = node.meta["val"]
        first = val[0] if isinstance(val, (tuple, list)) else val
        out = self.broadcast(operands, _shape(first), _op_names(node.target)[0])
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
        full, op = _op_names(node.target)
        xl = self.lab(node.args[0])
        nd = len(xl)
        dim = _arg(node, "dim")
        dims = set(range(nd)) if dim is None or dim == [] else {
            d % max(nd, 1) for d in ([dim] if isinstance(dim, int) else dim)}
        keep = bool(_arg(node, "keepdim", False))
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
        op = _op_names(node.target)[1]
        match = re.search(r"(\d)d", op)
        k = int(match.group(1)) if match else 2
        xl = self.lab(node.args[0])
        val = node.meta["val"]
        first = val[0] if isinstance(val, (tuple, list)) else val
        out = list(xl[:len(xl) - k]) + [self.fresh(s, "spatial positions") for s in _shape(first)[-k:]]
        return tuple(list(out) for _ in val) if isinstance(val, (tuple, list)) else out

    def h_reshape(self, node: fx.Node) -> Any:
        x = node.args[0]
        return self.reshape(self.lab(x), _shape(x.meta["val"]), _shape(node.meta["val"]),
                            _op_names(node.target)[0])

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
        if len(labels) == 1 and isinstance(labels[0], _Merged) and labels[0].sizes == tuple(out_sizes):
            return list(labels[0].parts)  # a view undoing an earlier merge
        merged = any(isinstance(lab, _Merged) for lab in labels)
        if len(out_sizes) == 1 and not merged and all(self.is_fixed(lab) for lab in labels[1:]):
            node_id, block = self.resolve(labels[0])  # C x H x W -> C*H*W: channel owns H*W entries
            rest = 1
            for s in sizes[1:]:
                rest *= s
            return [(node_id, block * rest)]
        if len(out_sizes) == 1 and not merged:
            return [_Merged(tuple(labels), tuple(sizes), op)]
        if len(labels) == 1 and not merged:
            node_id, block = self.resolve(labels[0])
            rest = 1
            for s in out_sizes[1:]:
                rest *= s
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
        xl, xs = self.lab(node.args[0]), _shape(node.args[0].meta["val"])
        os_ = _shape(node.meta["val"])
        off = len(os_) - len(xs)
        return [xl[i - off] if i >= off and xs[i - off] == os_[i] else self.fresh(os_[i], "broadcast axis")
                for i in range(len(os_))]

    def h_transpose(self, node: fx.Node) -> Any:
        full, op = _op_names(node.target)
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
        full, op = _op_names(node.target)
        args = list(node.args)
        bias = args.pop(0) if op.startswith(("addmm", "baddbmm", "addmv", "addbmm")) else None
        a, b = args[0], args[1]
        al, bl = self.lab(a), self.lab(b)
        as_, bs = _shape(a.meta["val"]), _shape(b.meta["val"])
        os_ = _shape(node.meta["val"])
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
        if isinstance(w, _Param) and w.dim == 0 and bl[-2] == _Param(w.key, 1) \
                and len(self.state_shapes[w.key]) == 2:
            self.add_layer(node, "linear", w.key, self.key_of(bias), w, bl[-2])
        if isinstance(bias, fx.Node):
            out = self.broadcast([(out, os_), (self.lab(bias), _shape(bias.meta["val"]))], os_, full)
        return out

    def h_attention(self, node: fx.Node) -> Any:
        q, k, v = node.args[:3]
        ql, kl, vl = self.lab(q), self.lab(k), self.lab(v)
        qs, ks, vs = (_shape(t.meta["val"]) for t in (q, k, v))
        self.union(ql[-1], kl[-1], "attention scores")
        self.union(kl[-2], vl[-2], "attention values")
        batch = self.broadcast([(ql[:-2], qs[:-2]), (kl[:-2], ks[:-2]), (vl[:-2], vs[:-2])],
                               _shape(node.meta["val"])[:-2], "attention")
        mask = _arg(node, "attn_mask")
        if isinstance(mask, fx.Node):
            scores = batch + [ql[-2], kl[-2]]
            self.broadcast([(scores, (*qs[:-1], ks[-2])), (self.lab(mask), _shape(mask.meta["val"]))],
                           (*qs[:-1], ks[-2]), "attention mask")
        return batch + [ql[-2], vl[-1]]

    def h_embedding(self, node: fx.Node) -> Any:
        w, idx = node.args[0], node.args[1]
        wl = self.lab(w)
        self.fix(wl[0], "embedding rows (indexed by token ids)")
        return list(self.lab(idx)) + [wl[1]]

    def h_cat(self, node: fx.Node) -> Any:
        full, op = _op_names(node.target)
        ts = [t for t in node.args[0] if _shape(t.meta["val"]) != (0,)]
        os_ = _shape(node.meta["val"])
        d = int(_arg(node, "dim", 0)) % len(os_)
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
        full, op = _op_names(node.target)
        xl = self.lab(node.args[0])
        d = int(_arg(node, "dim", 0)) % len(xl)
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
                labels[d] = self.fresh(_shape(v)[d], why)
            pieces.append(labels)
        return tuple(pieces)

    def h_slice(self, node: fx.Node) -> Any:
        full, op = _op_names(node.target)
        x = node.args[0]
        xl, xs = list(self.lab(x)), _shape(x.meta["val"])
        d = int(_arg(node, "dim", 0)) % len(xl)
        why = f"sliced along this axis ({full})"
        if op == "select":
            self.fix(xl[d], why, full)
            return xl[:d] + xl[d + 1:]
        if _shape(node.meta["val"])[d] == xs[d] and int(_arg(node, "step", 1) or 1) == 1:
            return xl  # a full slice is the identity
        self.fix(xl[d], why, full)
        xl[d] = self.fresh(_shape(node.meta["val"])[d], why)
        return xl

    def h_reorder(self, node: fx.Node) -> Any:
        """flip / roll: a fixed reordering of entries; harmless along positions only."""
        full, _ = _op_names(node.target)
        xl = list(self.lab(node.args[0]))
        dims = _arg(node, "dims", [])
        for d in ([dims] if isinstance(dims, int) else dims) or range(len(xl)):
            self.fix(xl[d], f"reordered along this axis ({full})", full)
        return xl

    def h_pad(self, node: fx.Node) -> Any:
        full, _ = _op_names(node.target)
        xl = list(self.lab(node.args[0]))
        pad = list(_arg(node, "pad", []))
        os_ = _shape(node.meta["val"])
        for p in range(len(pad) // 2):
            d = len(xl) - 1 - p
            if pad[2 * p] or pad[2 * p + 1]:
                self.fix(xl[d], f"padded along this axis ({full})", full)
                xl[d] = self.fresh(os_[d], "spatial positions")
        return xl


def _table() -> dict[str, Callable[[_Tracer, fx.Node], Any]]:
    t = _Tracer
    groups: dict[Callable[[_Tracer, fx.Node], Any], str] = {
        t.h_linear: "linear",
        t.h_conv: "conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d "
                  "conv_transpose3d",
        t.h_norm: " ".join(sorted(_NORM_OPS)),
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


_HANDLERS = _table()


def _program(model: LoadedModel) -> Any:
    if model.program is not None:
        return model.program
    try:
        return torch.export.export(model.module.eval(), (model.example_input(2),))
    except Exception as exc:  # export failures are many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MalError(f"{model.name}: cannot trace the model to find its permutation spaces "
                       f"({type(exc).__name__}: {first})") from exc


def discover_spec(model: LoadedModel) -> PermutationSpec:
    """Find the permutation spaces of ``model`` from its exported ATen graph.

    model: a loaded model; its ``program`` (a torch.export.ExportedProgram) is used when set,
        otherwise its module is exported with a probe batch of 2.
    Returns a PermutationSpec: every state key (parameters and buffers) mapped to one
        ``Axis | None`` per dimension, the spaces (fixed ones with a reason), the weight layers in
        execution order and the names of ops that forced spaces fixed (``unsupported``).
    Raises MalError when the module cannot be exported.
    """
    ep = _program(model)
    state = model.module.state_dict(keep_vars=True)
    tracer = _Tracer(ep, set(state))
    tracer.run()
    aliases: dict[int, list[str]] = {}
    for key, tensor in state.items():
        if key in tracer.state_shapes:
            aliases.setdefault(id(tensor), []).append(key)
    for keys in aliases.values():  # tied weights: one tensor, several keys, one permutation
        for d in range(len(tracer.state_shapes[keys[0]])):
            bound = [k for k in keys if (k, d) in tracer.bound]
            for k in keys if bound else []:
                tracer.union(_Param(k, d), _Param(bound[0], d), "tied weights")
    return _assemble(tracer, state)


def _assemble(tr: _Tracer, state: dict[str, torch.Tensor]) -> PermutationSpec:
    g = tr.g
    raw = [(lay, tr.resolve(lay.out), tr.resolve(lay.inp)) for lay in tr.layers]
    order: list[int] = []
    writers: dict[int, list[str]] = {}
    readers: dict[int, list[str]] = {}
    for lay, out, inp in raw:
        root = g.find(out[0])
        writers.setdefault(root, []).append(lay.name)
        readers.setdefault(g.find(inp[0]), []).append(lay.name)
        order += [root, g.find(inp[0])]
    first_key: dict[int, str] = {}
    for key in state:
        for d in range(len(tr.state_shapes.get(key, ()))):
            ref = tr.bound.get((key, d))
            if ref is not None:
                root = g.find(ref[0])
                order.append(root)
                first_key.setdefault(root, key)
    names: dict[int, str] = {}
    spaces: dict[str, Space] = {}
    for root in order:
        if root in names:
            continue
        if g.reason[root] == "spatial positions":
            base = "P_positions"  # token / pixel positions: fixed whoever writes them
        elif root in writers:
            w = writers[root]
            base = f"P_{w[0]}" if len(w) == 1 else f"P_stream_{w[0]}"
        elif g.reason[root] == "network input":
            base = "P_input"
        elif root in readers:  # written by an op, not a layer (after a sort, a concatenation)
            base = f"P_{readers[root][0]}_in"
        else:
            key = first_key.get(root, "space")
            base = "P_" + (key.rsplit(".", 1)[0] if key.endswith((".weight", ".bias")) else key)
        name, n = base, 2
        while name in spaces:
            name, n = f"{base}_{n}", n + 1
        names[root] = name
        spaces[name] = Space(name, g.units[root], g.reason[root] is not None, g.reason[root] or "")

    def axis(ref: Ref) -> Axis:
        return Axis(names[g.find(ref[0])], ref[1])

    # tied weights: keys aliasing one tensor take the axes of the key the graph used
    graph_key = {id(t): k for k, t in state.items() if k in tr.state_shapes}
    axes: dict[str, tuple[Axis | None, ...]] = {}
    for key, tensor in state.items():
        src = key if key in tr.state_shapes else graph_key.get(id(tensor), key)
        axes[key] = tuple(axis(tr.bound[(src, d)]) if (src, d) in tr.bound else None
                          for d in range(tensor.dim()))
    layers = []
    for index, (lay, out, inp) in enumerate(raw):
        norm: list[str] = []
        for user in lay.node.users:
            if user.op == "call_function" and _op_names(user.target)[1] in _NORM_OPS \
                    and user.args[0] is lay.node:
                for name in _NORM_ARGS:
                    p = _arg(user, name)
                    if isinstance(p, fx.Node) and p in tr.state_node:
                        norm.append(tr.state_node[p])
        layers.append(Layer(lay.name, lay.kind, lay.weight, lay.bias, tuple(norm), axis(out),
                            axis(inp), index, lay.kernel))
    return PermutationSpec(spaces=spaces, axes=axes, layers=layers, unsupported=list(tr.unsupported))
