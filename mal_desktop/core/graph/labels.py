"""Labels of tensor axes for permutation-space discovery: union-find, markers, graph helpers.

A label is a union-find node plus a layout: ``block`` entries per unit and ``tiles`` copies of
the unit layout (see ``spec.Axis``). See ``discover.py`` for the algorithm and ``op_rules.py``
for what each ATen operation does to labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

Ref = tuple[int, int, int]  # (union-find node, block, tiles)

NORM_OPS = {"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
             "_native_batch_norm_legit_functional", "native_batch_norm", "instance_norm",
             "layer_norm", "native_layer_norm", "rms_norm", "group_norm", "native_group_norm"}
NORM_ARGS = ("weight", "bias", "running_mean", "running_var")
IGNORED_OPS = {"_assert_tensor_metadata", "_assert_async", "_assert_scalar", "_functional_assert_async",
            "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "sym_constrain_range",
            "sym_constrain_range_for_size"}


@dataclass(frozen=True)
class Param:
    """Axis ``dim`` of state tensor ``key``; bound to a Ref the first time an op constrains it."""

    key: str
    dim: int


@dataclass(frozen=True)
class Merged:
    """Axes merged by a view that no Axis(space, block) describes (batch x channels, ...).

    Ops that only carry an axis along (a linear's leading axes) keep it; a view that splits it
    back recovers the parts; anything else pins the parts (``_Tracer.resolve``).
    """

    parts: tuple[Any, ...]  # labels, outermost first
    sizes: tuple[int, ...]
    op: str  # the view that merged them


@dataclass
class RawLayer:
    name: str
    kind: str
    weight: str
    bias: str | None
    node: fx.Node
    out: Any
    inp: Any
    kernel: tuple[int, ...]
    transposed: bool = False


class UnionFind:
    """Union-find over labels; a root carries the unit count and, when fixed, the reason.

    A node may also be a *coarsening* of its parent: ``link[a] = (beta, tau)`` says node a's
    units are the parent's units, each split into ``beta`` consecutive sub-units, the whole
    layout repeated ``tau`` times; so a label (a, b, t) is the label (parent, b * beta, t * tau).
    This is how query heads that share a key/value head (grouped-query attention) or an axis
    split into equal pieces (fused QKV, LSTM gates) are expressed: such a node can only move as
    its parent moves, which restricts its permutations and never breaks the function.
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.link: list[tuple[int, int]] = []
        self.units: list[int] = []
        self.reason: list[str | None] = []

    def new(self, units: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.link.append((1, 1))
        self.units.append(units)
        self.reason.append(reason)
        return len(self.parent) - 1

    def find_ref(self, a: int) -> Ref:
        """(root, beta, tau) such that node a's layout is the root's with those multipliers."""
        path = []
        while self.parent[a] != a:
            path.append(a)
            a = self.parent[a]
        root = a
        beta = tau = 1
        for node in reversed(path):  # nearest the root first: compose outwards, compress
            b, t = self.link[node]
            beta, tau = beta * b, tau * t
            self.parent[node], self.link[node] = root, (beta, tau)
        if not path:
            return root, 1, 1
        b, t = self.link[path[0]]
        return root, b, t

    def find(self, a: int) -> int:
        return self.find_ref(a)[0]

    def fix(self, a: int, reason: str) -> bool:
        """Mark a's group fixed; True when it was free before."""
        root = self.find(a)
        if self.reason[root] is None:
            self.reason[root] = reason
            return True
        return False

    def merge(self, a: int, b: int) -> None:
        """Join the roots of a and b with the same layout (equal unit counts)."""
        ra, rb = sorted((self.find(a), self.find(b)))
        if ra != rb:
            self.parent[rb] = ra
            self.link[rb] = (1, 1)
            self.reason[ra] = self.reason[ra] or self.reason[rb]

    def coarsen(self, fine: int, coarse: int, beta: int, tau: int) -> None:
        """Make root ``fine`` a coarsening of root ``coarse`` (see the class docstring)."""
        self.parent[fine] = coarse
        self.link[fine] = (beta, tau)
        self.reason[coarse] = self.reason[coarse] or self.reason[fine]


def shape_of(val: Any) -> tuple[int, ...]:
    out = []
    for s in val.shape:
        try:
            out.append(int(s))
        except (RuntimeError, TypeError, ValueError):  # unbacked symbolic size: unknown
            out.append(-1)
    return tuple(out)


def op_names(target: Any) -> tuple[str, str]:
    """("aten.max.dim", "max") for an ATen op; the target's text and name otherwise."""
    text = str(target)
    if isinstance(target, torch._ops.OpOverload) and text.startswith("aten."):
        return text, text.split(".")[1]
    return text, getattr(target, "__name__", text)


def arg_of(node: fx.Node, name: str, default: Any = None) -> Any:
    """Argument ``name`` of an ATen call, positional or keyword, by the op's schema."""
    if name in node.kwargs:
        return node.kwargs[name]
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        for i, a in enumerate(schema.arguments):
            if a.name == name:
                return node.args[i] if i < len(node.args) and not a.kwarg_only else default
    return default


def module_path(node: fx.Node) -> str:
    """The dotted path of the innermost module whose forward made ``node`` ("" when unknown)."""
    stack = node.meta.get("nn_module_stack") or {}
    for value in reversed(list(stack.values())):
        path = value[0] if isinstance(value, (tuple, list)) else value
        if isinstance(path, str) and path:
            return path.replace("L['self'].", "").replace("L__self__.", "")
    return ""


def tensor_nodes(obj: Any) -> Iterator[fx.Node]:
    if isinstance(obj, fx.Node):
        if isinstance(obj.meta.get("val"), torch.Tensor):
            yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from tensor_nodes(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensor_nodes(o)
