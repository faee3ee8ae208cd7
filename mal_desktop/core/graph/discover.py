"""Discover a model's permutation spaces from its ATen graph (recorded, exported or a .pt2's).

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

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from ..errors import MalError
from ..io.meta import meta_twin, quiet_torch_internals
from ..io.model import LoadedModel
from .heads import SettledHeads, settle_heads
from .spec import Axis, HeadGroup, Layer, PermutationSpec, Space
from .labels import (IGNORED_OPS, NORM_ARGS, NORM_OPS, Merged, Param, RawLayer, Ref,
                     UnionFind, arg_of, module_path, op_names, shape_of, tensor_nodes)
from .op_rules import HANDLERS, OpRules
from .file_spec import runs_cheaply, verified_file_spec
from .record import TRACING, AtenGraph, exported_graph, record_graph
from .spec_cache import load_spec, spec_key, store_spec


class _Tracer(OpRules):
    """Walks the graph once, labelling every tensor axis."""

    def __init__(self, aten: AtenGraph, state_keys: set[str], output_index: int = 0) -> None:
        self.output_index = output_index  # which user output is the logits
        self.g = UnionFind()
        self.labels: dict[fx.Node, Any] = {}
        self.bound: dict[tuple[str, int], Ref] = {}
        self.state_shapes: dict[str, tuple[int, ...]] = {}
        self.state_node: dict[fx.Node, str] = {}
        self.unsupported: list[str] = []
        self.layers: list[RawLayer] = []
        self.head_nodes: list[int] = []  # attention heads found by views (named P_heads_...)
        # (H*D) viewed as (H, D): node -> its (heads, within-head) labels; and nodes made by
        # viewing such a pair back as one axis -> the pair (see heads.py)
        self.head_views: dict[int, tuple[Ref, Ref]] = {}
        self.head_merges: dict[int, tuple[Any, Any]] = {}
        # a fused projection's node split into pieces: node -> (piece nodes, placeholder or
        # None); placeholder -> node; copies axis node -> placeholder (see ShapeRules.segment)
        self.segments: dict[int, tuple[list[int], int | None]] = {}
        self.placeholders: dict[int, int] = {}
        self.copies: dict[int, int] = {}
        self.view_node: fx.Node | None = None
        self.aten = aten
        for node in aten.graph.nodes:
            if node.op != "placeholder":
                continue
            val = node.meta.get("val")
            kind, key = aten.inputs.get(node.name, ("USER_INPUT", None))
            if not isinstance(val, torch.Tensor):
                self.labels[node] = None
            elif kind in ("PARAMETER", "BUFFER") and key in state_keys:
                self.state_node[node] = key
                self.state_shapes[key] = shape_of(val)
                self.labels[node] = [Param(key, d) for d in range(val.dim())]
            elif kind == "USER_INPUT":
                self.labels[node] = self.fresh_like(val, "network input")
            else:  # constants, non-persistent buffers: never permuted, so they pin what they touch
                self.labels[node] = self.fresh_like(val, "constant tensor")

    # ----- labels -----
    def fresh(self, size: int, reason: str | None) -> Ref:
        return (self.g.new(size, reason), 1, 1)

    def fresh_like(self, val: Any, reason: str) -> Any:
        if isinstance(val, torch.Tensor):
            return [self.fresh(s, reason) for s in shape_of(val)]
        if isinstance(val, (list, tuple)):
            return tuple(self.fresh_like(v, reason) for v in val)
        return None

    def resolve(self, label: Any) -> Ref:
        """The label as (root, block, tiles); Param and Merged labels become refs."""
        if isinstance(label, Merged):  # used as one axis: its parts cannot move
            why = self.reason_of(label) if self.is_fixed(label) else \
                f"reshape mixes permutable axes ({label.op})"
            for part in label.parts:
                self.fix(part, why, label.op)
            return self.fresh(math.prod(label.sizes), why)
        if isinstance(label, Param):
            ref = self.bound.get((label.key, label.dim))
            if ref is None:
                ref = self.fresh(self.state_shapes[label.key][label.dim], None)
                self.bound[(label.key, label.dim)] = ref
            label = ref
        root, beta, tau = self.g.find_ref(label[0])
        return root, label[1] * beta, label[2] * tau

    def is_fixed(self, label: Any) -> bool:
        if isinstance(label, Merged):
            return all(self.is_fixed(part) for part in label.parts)
        return self.reason_of(label) is not None

    def reason_of(self, label: Any) -> str | None:
        if isinstance(label, Merged):
            return self.reason_of(label.parts[0])
        if isinstance(label, Param) and (label.key, label.dim) not in self.bound:
            return None  # unconstrained so far; looking must not bind it
        return self.g.reason[self.g.find(self.resolve(label)[0])]

    def size_of(self, label: Any) -> int:
        node, block, tiles = self.resolve(label)
        return self.g.units[node] * block * tiles

    def fix(self, label: Any, reason: str, op: str | None = None) -> None:
        """Fix label's group; ``op`` is recorded as unsupported when this pinned a free space."""
        if self.g.fix(self.resolve(label)[0], reason) and op is not None:
            self.note(op)

    def note(self, op: str) -> None:
        if op not in self.unsupported:
            self.unsupported.append(op)

    def union(self, a: Any, b: Any, where: str) -> None:
        """The axes labelled a and b must be permuted identically, entry by entry."""
        if isinstance(a, Merged) and isinstance(b, Merged) and a.sizes == b.sizes:
            for pa, pb in zip(a.parts, b.parts):
                self.union(pa, pb, where)
            return
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Param) and (x.key, x.dim) not in self.bound:
                size = self.state_shapes[x.key][x.dim]
                ref = self.resolve(y)
                if size == self.size_of(ref):
                    self.bound[(x.key, x.dim)] = ref
                    return
        (na, ba, ta), (nb, bb, tb) = self.resolve(a), self.resolve(b)
        if (na, ba, ta) == (nb, bb, tb):
            return
        units = self.g.units
        same_size = units[na] * ba * ta == units[nb] * bb * tb
        if same_size and na != nb and (ba, ta) == (bb, tb):
            self.g.merge(na, nb)
        elif same_size and na != nb and bb % ba == 0 and tb % ta == 0:
            # a's units are finer: they can only move as b's units do (query heads sharing a
            # key/value head, an axis split into equal pieces)
            self.g.coarsen(na, nb, bb // ba, tb // ta)
        elif same_size and na != nb and ba % bb == 0 and ta % tb == 0:
            self.g.coarsen(nb, na, ba // bb, ta // tb)
        else:
            # one permutation cannot act on both with different unit layouts: pin both
            why = self.g.reason[na] or self.g.reason[nb] or f"incompatible unit layouts at {where}"
            self.g.fix(na, why)
            self.g.fix(nb, why)

    def lab(self, arg: Any) -> Any:
        return self.labels.get(arg) if isinstance(arg, fx.Node) else None

    def broadcast(self, operands: list[tuple[list, tuple[int, ...]]], out_shape: tuple[int, ...],
                  where: str) -> list:
        """Align operands from the right; equal non-1 sizes share a label (union)."""
        out: list = []
        for k in range(len(out_shape), 0, -1):
            cands = [(lab[-k], shp[-k]) for lab, shp in operands if len(shp) >= k]
            full = [lab for lab, s in cands if s == out_shape[-k] and s != 1]
            constants = [lab for lab in full if self.reason_of(lab) == "constant tensor"]
            if constants and len(full) > 1:
                # a constant that varies along the axis (a rotary table, per-position scales)
                # ties its entries to positions: name that rather than "constant tensor"
                for lab in full:
                    if not self.is_fixed(lab):
                        self.fix(lab, f"combined with a constant that varies along this axis "
                                      f"({where}; e.g. a rotary embedding table)", where)
            # the constant itself is not joined: its reason would then win over the one above
            tie = [lab for lab in full if lab not in constants] if len(full) > 1 else full
            for other in tie[1:]:
                self.union(tie[0], other, where)
            if full:
                out.append((tie or full)[0])
            elif cands and out_shape[-k] == 1:
                out.append(cands[0][0])
            else:
                out.append(self.fresh(out_shape[-k], "broadcast axis"))
        return out

    # ----- driver -----
    def run(self) -> None:
        for node in self.aten.graph.nodes:
            if node.op == "output":
                self.output(node)
            elif node.op == "call_function":
                self.labels[node] = self.call(node)
            elif node.op != "placeholder":
                self.labels[node] = self.unknown(node, f"{node.op} {node.target}")

    def output(self, node: fx.Node) -> None:
        outs = list(node.args[0]) if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
        flags = self.aten.user_outputs
        user = [out for i, out in enumerate(outs) if i >= len(flags) or flags[i]]
        # buffer mutations of a training-mode program are not outputs; the logits go first so
        # a space that is both keeps the reason "class output"
        order = sorted(range(len(user)), key=lambda i: i != self.output_index)
        for i in order:
            reason = ("class output" if len(user) == 1 or i == self.output_index
                      else f"model output {i} (returned as it is, not the logits)")
            for t in tensor_nodes(user[i]):
                for label in self.lab(t) or []:
                    self.fix(label, reason)

    def call(self, node: fx.Node) -> Any:
        if node.target is operator.getitem:
            handler: Callable[[Any, fx.Node], Any] | None = OpRules.h_getitem
            full = "getitem"
        elif isinstance(node.target, torch._ops.OpOverload) and str(node.target).startswith("aten."):
            full, op = op_names(node.target)
            if op in IGNORED_OPS:
                return self.fresh_like(node.meta.get("val"), "constant tensor")
            handler = HANDLERS.get(full[len("aten."):]) or HANDLERS.get(op)
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
        """An op we cannot reason about pins every axis it touches; the reason names the op and
        the module that calls it."""
        tensors = list(tensor_nodes((node.args, node.kwargs)))
        where = module_path(node)
        why = f"unsupported op {name}" + (f" in {where}" if where else "")
        pinned = False
        for t in tensors:
            labels = self.lab(t)
            for label in labels if isinstance(labels, list) else []:
                pinned = self.g.fix(self.resolve(label)[0], why) or pinned
        if pinned:  # listed only when it cost a permutation space
            self.note(f"{name} ({where})" if where else name)
        return self.fresh_like(node.meta.get("val"), why if tensors else "constant tensor")

    def key_of(self, arg: Any) -> str | None:
        return self.state_node.get(arg) if isinstance(arg, fx.Node) else None

    def add_layer(self, node: fx.Node, kind: str, key: str | None, bias_key: str | None, out: Any,
                  inp: Any, kernel: tuple[int, ...] = (), transposed: bool = False) -> None:
        if key is None or any(lay.weight == key for lay in self.layers):
            return  # a shared weight is one layer, named after its first use
        name = key.rsplit(".", 1)[0] if "." in key else key
        self.layers.append(RawLayer(name, kind, key, bias_key, node, out, inp, kernel, transposed))


def export_module(module: torch.nn.Module, example: torch.Tensor) -> Any:
    """``torch.export.export`` of ``module`` in eval mode on ``example``: under the tracing lock
    (a recording in another thread would see its ops, record.py) and without torch's warnings
    about its own internals."""
    with TRACING, quiet_torch_internals():
        return torch.export.export(module.eval(), (example,))


def _recording(model: LoadedModel) -> AtenGraph | None:
    """One forward pass of the model, recorded (record.py: milliseconds, no compiler stack to
    import); None for a .pt2 program (its own graph is read), a module that does not run cheaply
    (``file_spec.runs_cheaply``: the pass runs on the weights), and a recording that refuses or
    fails (export decides, and reports what it cannot trace)."""
    if model.program is not None or not _recordable(model.module):
        return None
    try:
        with quiet_torch_internals():
            return record_graph(model.module, model.example_input(2))
    except Exception:  # noqa: BLE001 - see above
        return None


def _exported(model: LoadedModel, on_meta: bool = True) -> AtenGraph:
    """The model's ATen graph from torch.export: its own program (.pt2), else its module
    exported on a probe batch.

    on_meta: export a twin of the module whose weights live on the meta device, with a meta
    probe: tracing needs shapes, never values, so no weight is read or materialised (a
    memory-mapped model stays unread; a 7B-shaped model is discovered in little memory). A
    module the meta twin cannot trace (e.g. a plain tensor attribute mixed with its weights) is
    exported as it is.
    """
    if model.program is not None:
        return exported_graph(_functional(model.program))
    example = model.example_input(2)
    try:
        if on_meta:
            try:
                program = export_module(meta_twin(model.module), example.to("meta"))
            except Exception:  # noqa: BLE001 - retried on the real module, which reports
                program = export_module(model.module, example)
        else:
            program = export_module(model.module, example)
    except Exception as exc:  # export failures are many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MalError(f"{model.name}: cannot trace the model to find its permutation spaces "
                       f"({type(exc).__name__}: {first})") from exc
    return exported_graph(_functional(program))


def _recordable(module: torch.nn.Module) -> bool:
    return runs_cheaply([*module.parameters(), *module.buffers()])


def _functional(program: Any) -> Any:
    """The program without in-place ops (``x += shortcut`` exports as ``add_``).

    A mutating op writes into one of its inputs, so its labels would have to flow backwards;
    functionalising (``run_decompositions`` with an empty table: ops stay as they are, only
    mutation is removed) turns it into an ordinary op and an output.
    """
    mutable = any(node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
                  and node.target._schema.is_mutable for node in program.graph.nodes)
    if not mutable:
        return program
    try:
        with TRACING, quiet_torch_internals():
            return program.run_decompositions({})
    except Exception:  # noqa: BLE001 - keep the original: its in-place ops pin what they touch
        return program


def discover_spec(model: LoadedModel, cache: bool = True, on_meta: bool = True
                  ) -> PermutationSpec:
    """Find the permutation spaces of ``model`` from its ATen graph.

    model: a loaded model; its ``program`` (a torch.export.ExportedProgram) is read when set;
        otherwise one forward pass on a probe batch of 2 is recorded, or, where it cannot be,
        the module is exported. Its module may live on the meta device (a model opened from
        headers alone: always exported).
    cache: reuse the spec stored for this architecture in the user cache (see spec_cache), and
        store what discovery finds there; models made in memory are never cached.
    on_meta: when the model is exported, export a meta-device twin of the module (no weight is
        read); see ``_exported``.
    The order: the user cache; a recording; the spec the model's file carries, once it passes
    the self-test (file_spec.py), only where no recording can be made, since the self-test
    costs more (~2 forward passes per space: 100-350 ms at widths 1024-2048 against a 10-20 ms
    recording); an export.
    Returns a PermutationSpec: every state key (parameters and buffers) mapped to one
        ``Axis | None`` per dimension, the spaces (fixed ones with a reason), the weight layers in
        execution order and the names of ops that forced spaces fixed (``unsupported``).
    Raises MalError when the module cannot be exported.
    """
    key = spec_key(model) if cache else None
    if key is not None:
        cached = load_spec(key)
        if cached is not None:
            return cached
    aten = _recording(model)
    if aten is None:
        stored = verified_file_spec(model, key)
        if stored is not None:
            # not cached: the cache answers for every model of this architecture, and a spec
            # that came from a file vouches only for the file it came from (verified each time)
            return stored
        aten = _exported(model, on_meta)
    spec = _spec_of(model, aten)
    if key is not None:
        store_spec(key, spec)
    return spec


def _spec_of(model: LoadedModel, aten: AtenGraph) -> PermutationSpec:
    state = model.module.state_dict(keep_vars=True)
    tracer = _Tracer(aten, set(state), model.output_index)
    tracer.run()
    aliases: dict[int, list[str]] = {}
    for key, tensor in state.items():
        if key in tracer.state_shapes:
            aliases.setdefault(id(tensor), []).append(key)
    for keys in aliases.values():  # tied weights: one tensor, several keys, one permutation
        for d in range(len(tracer.state_shapes[keys[0]])):
            bound = [k for k in keys if (k, d) in tracer.bound]
            for k in keys if bound else []:
                tracer.union(Param(k, d), Param(bound[0], d), "tied weights")
    return _assemble(tracer, state)


def _assemble(tr: _Tracer, state: dict[str, torch.Tensor]) -> PermutationSpec:
    g = tr.g
    settled = settle_heads(tr)
    fine = settled.fine
    repeated = {g.find(n): rep for n, rep in settled.repeated.items()}

    def space_root(node: int) -> int:
        """The root whose space holds node's units (grouped-query heads: their key/value
        head's)."""
        root = g.find(node)
        return g.find(repeated[root][0]) if root in repeated else root

    raw = [(lay, tr.resolve(lay.out), tr.resolve(lay.inp)) for lay in tr.layers]
    order: list[int] = []
    writers: dict[int, list[str]] = {}
    readers: dict[int, list[str]] = {}
    for lay, out, inp in raw:
        root = space_root(out[0])
        writers.setdefault(root, []).append(lay.name)
        readers.setdefault(space_root(inp[0]), []).append(lay.name)
        order += [root, space_root(inp[0])]
    first_key: dict[int, str] = {}
    for key in state:
        for d in range(len(tr.state_shapes.get(key, ()))):
            ref = tr.bound.get((key, d))
            if ref is not None:
                root = space_root(ref[0])
                order.append(root)
                first_key.setdefault(root, key)
    heads = {g.find(h) for h in tr.head_nodes} | {g.find(f) for f in fine} \
        | {g.find(n) for n in settled.segmented}
    names: dict[int, str] = {}
    spaces: dict[str, Space] = {}
    for root in order:
        if root in names:
            continue
        if root in heads and g.reason[root] is None:
            w = writers.get(root) or [first_key.get(root, "attention").rsplit(".", 1)[0]]
            base = f"P_heads_{w[0]}"
        elif g.reason[root] == "spatial positions":
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
        root, block, tiles = tr.resolve(ref)
        if root in repeated:  # each head's dims written once per query head of its group
            owner, rep, span = repeated[root]
            return Axis(names[g.find(owner)], block, tiles, rep, span)
        return Axis(names[root], block, tiles)

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
            if user.op == "call_function" and op_names(user.target)[1] in NORM_OPS \
                    and user.args[0] is lay.node:
                for name in NORM_ARGS:
                    p = arg_of(user, name)
                    if isinstance(p, fx.Node) and p in tr.state_node:
                        norm.append(tr.state_node[p])
        layers.append(Layer(lay.name, lay.kind, lay.weight, lay.bias, tuple(norm), axis(out),
                            axis(inp), index, lay.kernel, lay.transposed))
    return PermutationSpec(spaces=spaces, axes=axes, layers=layers, unsupported=list(tr.unsupported),
                           head_groups=_head_groups(g, names, settled))


def _head_groups(g: UnionFind, names: dict[int, str], settled: SettledHeads
                 ) -> dict[str, HeadGroup]:
    """Spaces of attention heads by name. A family is named after its first space; the
    within-head permutations it holds are named family:0, family:1, ..."""
    groups: dict[str, HeadGroup] = {}
    family: dict[int, str] = {}
    inner: dict[int, str] = {}
    for root, hs in settled.fine.items():
        fam = g.find(hs.family)
        if fam not in family:
            family[fam] = next((names[g.find(r)] for r, h in settled.fine.items()
                                if g.find(h.family) == fam and g.find(r) in names), "")
            if not family[fam]:
                family[fam] = next(names[g.find(n)] for n, pieces in settled.segmented.items()
                                   if any(g.find(p) == g.find(root) for p in pieces))
        inner[g.find(root)] = f"{family[fam]}:{sum(v.startswith(family[fam] + ':') for v in inner.values())}"

    def part(root: int) -> tuple[str, str]:
        return inner[g.find(root)], settled.fine[root].inner_reason

    for root, hs in settled.fine.items():
        name = names.get(g.find(root))
        if name is not None:
            groups[name] = HeadGroup(family[g.find(hs.family)], hs.heads, hs.dim, (part(root),))
    for node, pieces in settled.segmented.items():
        name = names.get(g.find(node))
        hs = settled.fine[pieces[0]]
        if name is not None:
            groups[name] = HeadGroup(family[g.find(hs.family)], hs.heads, hs.dim,
                                     tuple(part(p) for p in pieces))
    for root, (heads, why) in settled.blocks.items():
        name = names.get(g.find(root))
        if name is not None and g.reason[g.find(root)] is None:
            groups[name] = HeadGroup(name, heads, 1, inner_reason=why)
    return groups
