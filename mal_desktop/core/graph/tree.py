"""The layer tree: a model's module hierarchy with shapes, statistics and permutation spaces.

The hierarchy comes from the dotted state keys ("blocks.0.conv1.weight" lives in module
"blocks.0.conv1"), so it is the same for an in-memory module and for a .pt2 program's module,
whose ``named_modules`` carries no types. The GUI's tree model and ``mal inspect`` adapt it.
All classes are frozen: a tree may cross threads.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..io.meta import tie_groups
from ..io.model import LoadedModel
from ..io.pages import PageReleaser
from ..jsonio import json_safe
from ..progress import check_cancelled
from .recurrent import recurrent_riders
from .spec import HeadGroup, Layer, PermutationSpec, repeated_spaces


@dataclass(frozen=True)
class TensorInfo:
    """One state tensor: its shape and statistics, and the space of each axis.

    std is torch's default (unbiased) standard deviation, 0 for fewer than 2 entries.
    axes: space id per dimension, None where the axis is not permutable.
    fixed: True where the axis is not permutable or its space is fixed.
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    norm: float
    mean: float
    std: float
    axes: tuple[str | None, ...]
    fixed: tuple[bool, ...]


@dataclass(frozen=True)
class LayerNode:
    """A module of the model.

    path: dotted module path ("" for the model itself); kind: "linear", "conv2d", "batchnorm",
    "layernorm", "embedding", "module", "model", ...; tensors: the module's own tensors;
    params: parameter count including children; layer: the weight layer (what the user drags),
    None for other modules; repeat: a signature shared by structurally identical sibling
    blocks (so a view can collapse them), None when the block has no twin.
    """

    path: str
    kind: str
    tensors: tuple[TensorInfo, ...]
    children: tuple[LayerNode, ...]
    params: int
    layer: Layer | None = None
    repeat: str | None = None

    @property
    def name(self) -> str:
        """The last component of the path."""
        return self.path.rsplit(".", 1)[-1]

    def walk(self) -> Iterator[LayerNode]:
        """This node and its descendants, depth first, in model order."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class LayerTree:
    """A model's layer tree plus the permutation spec it shows.

    has_stats: the tensors' norm, mean and std were computed; False for a tree built from the
    headers alone (they are NaN), which the weights' tree replaces once they are read.
    tied: state key -> the key it shares its tensor with and whose module counts its parameters
    (tied weights: ``lm_head.weight`` -> ``model.embed_tokens.weight``).
    """

    model_name: str
    root: LayerNode
    spec: PermutationSpec
    total_params: int
    has_stats: bool = True
    tied: dict[str, str] = field(default_factory=dict)
    _index: dict[str, LayerNode] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {node.path: node for node in self.root.walk()})

    def same_layout(self, other: "LayerTree") -> bool:
        """Same modules, tensors (keys, shapes, dtypes) and permutation spec as ``other``:
        the trees differ at most in their statistics (a tree from the headers and the same
        model's tree once its weights are read)."""
        def layout(tree: LayerTree) -> list:
            return [(n.path, n.kind, n.layer, n.repeat, [(t.key, t.shape, t.dtype, t.axes)
                                                         for t in n.tensors])
                    for n in tree.root.walk()]
        return self.spec == other.spec and layout(self) == layout(other)

    def find(self, path: str) -> LayerNode | None:
        """The node at module ``path`` ("" is the root), or None."""
        return self._index.get(path)

    def search(self, text: str) -> list[LayerNode]:
        """Nodes whose path contains ``text`` (case-insensitive) or that own a tensor of the shape
        ``text`` spells ("64x32", "64, 32", "(64, 32)"); in tree order."""
        text = text.strip()
        if not text:
            return []
        shape = parse_shape(text)
        low = text.lower()
        return [node for node in self.root.walk()
                if (node.path and low in node.path.lower())
                or (shape is not None and any(t.shape == shape for t in node.tensors))]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict: every module (flat, tree order), spaces and unsupported ops."""
        layers = []
        for node in self.root.walk():
            layers.append({
                "path": node.path,
                "kind": node.kind,
                "params": node.params,
                "repeat": node.repeat,
                "children": [c.path for c in node.children],
                "layer": None if node.layer is None else _layer_json(node.layer),
                "tensors": [{
                    "key": t.key, "shape": list(t.shape), "dtype": t.dtype, "numel": t.numel,
                    "norm": json_safe(t.norm), "mean": json_safe(t.mean), "std": json_safe(t.std),
                    "spaces": list(t.axes), "fixed": list(t.fixed),
                } for t in node.tensors],
            })
        repeated = repeated_spaces(self.spec)
        spaces = [{
            "id": s.id, "size": s.size, "fixed": s.fixed, "reason": s.reason,
            "tensors": [[key, dim] for key, dim in self.spec.tensors_on(s.id)],
            **({"heads": _heads_json(self.spec.head_groups[s.id],
                                     repeated.get(s.id, (1, 1))[0])}
               if s.id in self.spec.head_groups else {}),
        } for s in self.spec.spaces.values()]
        return {"model": self.model_name, "total_params": self.total_params,
                "statistics": self.has_stats, "layers": layers,
                "spaces": spaces, "unsupported": list(self.spec.unsupported)}


def parse_shape(text: str) -> tuple[int, ...] | None:
    """"64x32", "64×32", "64, 32", "(64, 32)", "[64]" -> (64, 32); None when not a shape."""
    body = text.strip().strip("()[]").strip().rstrip(",")
    if not re.fullmatch(r"\d+(\s*[x×,]\s*\d+)*", body):
        return None
    return tuple(int(p) for p in re.split(r"\s*[x×,]\s*", body))


def _layer_json(layer: Layer) -> dict[str, Any]:
    return {"name": layer.name, "kind": layer.kind, "index": layer.index, "weight": layer.weight,
            "bias": layer.bias, "norm": list(layer.norm), "kernel": list(layer.kernel),
            "out_space": layer.out_axis.space, "out_block": layer.out_axis.block,
            "in_space": layer.in_axis.space, "in_block": layer.in_axis.block}


_CHUNK = 1 << 21  # elements per step: a 16 MiB float64 scratch, whatever the tensor's size


def _moments(t: torch.Tensor) -> tuple[float, float, float]:
    """(norm, mean, unbiased std) of ``t``, accumulated in float64 over chunks.

    A whole-tensor float64 copy would double a large layer's memory (and a 4096 x 11008 bf16
    weight is 90 MiB as bf16, 360 MiB as float64); chunks cost one bounded scratch buffer. The
    chunks' moments are combined exactly (Chan et al.), so the result matches a float64 pass
    to about 1e-12.
    """
    flat = t.detach().reshape(-1)
    n_total, mean, m2, sumsq = 0, 0.0, 0.0, 0.0
    scratch = torch.empty(min(_CHUNK, flat.numel()), dtype=torch.float64)
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start:start + _CHUNK]
        buf = scratch[:chunk.numel()]
        buf.copy_(chunk)
        n = buf.numel()
        sq = float(torch.dot(buf, buf))
        c_mean = float(buf.sum()) / n
        # float64 sums of float32-or-narrower values: the cancellation in sq - n * mean^2 costs
        # digits only when |mean| is ~1e7 times the spread, far beyond any weight or statistic
        c_m2 = max(sq - n * c_mean * c_mean, 0.0)
        delta = c_mean - mean
        total = n_total + n
        mean += delta * n / total
        m2 += c_m2 + delta * delta * n_total * n / total
        sumsq += sq
        n_total = total
    std = math.sqrt(max(m2, 0.0) / (n_total - 1)) if n_total > 1 else 0.0
    return math.sqrt(sumsq), mean, std


def tensor_info(key: str, tensor: torch.Tensor, spec: PermutationSpec, stats: bool = True,
                pages: PageReleaser | None = None) -> TensorInfo:
    """Shape, statistics and per-axis spaces of one state tensor.

    stats: False (or a tensor on the meta device, which holds no values) leaves norm, mean and
    std NaN: a tree from the headers alone reads no tensor data. pages: hands a memory-mapped
    tensor's pages back once its statistics are computed.
    """
    t = tensor.detach()
    n = t.numel()
    axes = spec.axes.get(key) or (None,) * t.dim()
    ids = tuple(a.space if a is not None else None for a in axes)
    fixed = tuple(a is None or a.space not in spec.spaces or spec.spaces[a.space].fixed for a in axes)
    if not stats or t.is_meta:
        norm = mean = std = math.nan
    elif n and not t.is_complex():
        check_cancelled()  # the statistics read every weight: seconds to minutes at LLM sizes
        norm, mean, std = _moments(t)
        if pages is not None:
            pages.release(t)
    else:
        norm = mean = std = 0.0
    return TensorInfo(key=key, shape=tuple(t.shape), dtype=str(t.dtype).replace("torch.", ""),
                      numel=n, norm=norm, mean=mean, std=std, axes=ids, fixed=fixed)


_CLASS_KINDS = {
    "Linear": "linear", "Conv1d": "conv1d", "Conv2d": "conv2d", "Conv3d": "conv3d",
    "ConvTranspose1d": "conv_transpose1d", "ConvTranspose2d": "conv_transpose2d",
    "BatchNorm1d": "batchnorm", "BatchNorm2d": "batchnorm", "BatchNorm3d": "batchnorm",
    "_BatchNorm": "batchnorm", "LayerNorm": "layernorm", "GroupNorm": "groupnorm",
    "RMSNorm": "rmsnorm", "Embedding": "embedding",
}


def _class_names(model: LoadedModel) -> dict[str, list[str]]:
    """Module path -> class names (most derived first). A .pt2 module's submodules are bare
    ``nn.Module`` stand-ins, so their classes come from the program's ``nn_module_stack``."""
    names: dict[str, list[str]] = {}
    for path, module in model.module.named_modules():
        if type(module) is not nn.Module:
            names[path] = [cls.__name__ for cls in type(module).__mro__]
    if model.program is not None:
        for node in model.program.graph.nodes:
            for path, type_name in (node.meta.get("nn_module_stack") or {}).values():
                names.setdefault(path, [str(type_name).rsplit(".", 1)[-1]])
    return names


def _kind(classes: list[str], own: dict[str, torch.Tensor], layer: Layer | None) -> str:
    if layer is not None:
        return layer.kind
    for name in classes:
        if name in _CLASS_KINDS:
            return _CLASS_KINDS[name]
    if classes:
        return "module"
    if "running_mean" in own:  # no class known: guess from the tensors
        return "batchnorm"
    weight = own.get("weight")
    if weight is not None and weight.dim() == 1 and set(own) <= {"weight", "bias"}:
        return "norm"
    return "module"


def build_layer_tree(model: LoadedModel, spec: PermutationSpec | None = None,
                     stats: bool = True) -> LayerTree:
    """The layer tree of ``model``.

    model: the loaded model (its module may live on the meta device: a tree from the headers).
    spec: its permutation spec; discovered when None.
    stats: compute each tensor's norm, mean and std (one chunked pass over the weights, whose
        memory-mapped pages are handed back tensor by tensor); False leaves them NaN and reads
        no tensor data.
    Returns a LayerTree. Raises MalError (from discovery) when the model cannot be traced.
    """
    if spec is None:
        from .discover import discover_spec
        spec = discover_spec(model)
    state = model.state()
    param_keys = {k for k, _ in model.module.named_parameters()}  # tied weights counted once
    layers = {layer.name: layer for layer in spec.layers}
    classes = _class_names(model)
    pages = PageReleaser() if stats else None

    # module path -> own tensors (by state key), and path -> child paths, both in state order
    own: dict[str, dict[str, torch.Tensor]] = {"": {}}
    children: dict[str, list[str]] = {"": []}
    for key, tensor in state.items():
        path = key.rpartition(".")[0]
        parts = path.split(".") if path else []
        for depth in range(len(parts)):
            parent, child = ".".join(parts[:depth]), ".".join(parts[:depth + 1])
            if child not in own:
                own[child], children[child] = {}, []
                children[parent].append(child)
        own[path][key] = tensor
    _split_stacked_layers(spec, own, children)

    def build(path: str) -> LayerNode:
        kids = tuple(build(c) for c in children[path])
        tensors = tuple(tensor_info(k, t, spec, stats, pages) for k, t in own[path].items())
        params = sum(t.numel for t in tensors if t.key in param_keys) + sum(k.params for k in kids)
        kind = "model" if not path else _kind(classes.get(path, []), own[path], layers.get(path))
        return LayerNode(path, kind, tensors, _with_repeats(kids, classes), params,
                         layers.get(path))

    root = build("")
    total = sum(p.numel() for p in model.module.parameters())
    has_stats = stats and not any(t.is_meta for t in state.values())
    tied = {name: group[0] for group in tie_groups(model.module) for name in group[1:]
            if name in state}
    return LayerTree(model.name, root, spec, total, has_stats, tied)


def _split_stacked_layers(spec: PermutationSpec, own: dict[str, dict[str, torch.Tensor]],
                          children: dict[str, list[str]]) -> None:
    """Give every weight layer that is not a module of its own a node under its module.

    A stacked recurrent module (``nn.LSTM(num_layers=2)``) is one module holding several
    layers, which discovery names ``rnn.l0``, ``rnn.l1``: each becomes a child node of ``rnn``
    holding its tensors (input and recurrent weights, biases, reverse direction), so it can be
    shown, dragged and dropped like any layer. Edits ``own`` and ``children`` in place.
    """
    for layer in spec.layers:
        if layer.name in own:
            continue
        module = layer.weight.rpartition(".")[0]
        if module not in own or not layer.name.startswith(f"{module}." if module else ""):
            continue  # not a module path, and not a sub-layer of one: nothing to attach it to
        keys = [layer.weight] + ([layer.bias] if layer.bias else [])
        keys += list(recurrent_riders(layer.weight, own[module]).values())
        own[layer.name] = {k: own[module].pop(k) for k in keys if k in own[module]}
        children[layer.name] = []
        children[module].append(layer.name)


def _signature(node: LayerNode) -> str:
    """Structure only: kinds, relative names and shapes (not values, not the path)."""
    own = ",".join(f"{t.key.rsplit('.', 1)[-1]}:{'x'.join(map(str, t.shape))}" for t in node.tensors)
    kids = ",".join(f"{c.name}={_signature(c)}" for c in node.children)
    return f"{node.kind}({own};{kids})"


def _with_repeats(kids: tuple[LayerNode, ...], classes: dict[str, list[str]]) -> tuple[LayerNode, ...]:
    """Mark composite siblings that share a structure with the same ``repeat`` string."""
    sigs = [_signature(k) if k.children else None for k in kids]
    out = []
    for kid, sig in zip(kids, sigs):
        if sig is not None and sigs.count(sig) > 1:
            label = (classes.get(kid.path) or [kid.kind])[0]
            digest = hashlib.sha1(sig.encode()).hexdigest()[:10]
            kid = LayerNode(kid.path, kid.kind, kid.tensors, kid.children, kid.params, kid.layer,
                            f"{label}#{digest}")
        out.append(kid)
    return tuple(out)


def _heads_json(group: HeadGroup, query_heads: int = 1) -> dict:
    """An attention's space as JSON: its family, heads, dims per head, query heads per head
    (grouped-query attention: more than 1, their order inside a group may move) and, per
    segment, which within-head permutation it shares and why its dims are pinned ("" when they
    move)."""
    return {"family": group.family, "heads": group.heads, "dim": group.dim,
            "query_heads_per_group": query_heads,
            "parts": [{"inner": inner, "pinned": why} for inner, why in group.parts],
            "blocks_reason": group.inner_reason}
