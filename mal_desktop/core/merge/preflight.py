"""Checks that run before any alignment: does a step fit, what width case is it, what will it cost.

``check_layers`` is the single rule book. The GUI asks it on every drag-hover (through
``check_step`` on layer trees), the assembly job asks it before aligning, and ``preflight_plan``
runs the shape-level part on file headers before any tensor is loaded.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Mapping

from ..align.generalized import kernel_text, side_text
from ..graph.recurrent import RECURRENT_KINDS, recurrent_riders
from ..graph.spec import Axis, Layer, PermutationSpec, head_blocks
from .chains import CHAIN_WORKING_BYTES
from .plan import AssemblyPlan


MERGEABLE_KINDS = ("linear", "conv2d") + RECURRENT_KINDS


@dataclass(frozen=True)
class StepCheck:
    """Whether a step can run; ``reason`` says why not; ``case_text`` names the width case."""

    ok: bool
    reason: str = ""
    case_text: str = ""
    units: str = ""  # what one unit of the base layer is, where it is more than a row
    note: str = ""  # allowed, but worth a word (a donor that reads another kind of data)


CLASS_OUTPUT = "class output"  # the reasons permutation discovery gives for fixed spaces
NETWORK_INPUT = "network input"


def describe_side(side: str, base: int, target: int, fixed: bool = False, unit: str = "") -> str:
    """One side of a width case in words, e.g. 'out: base wider 128 <- 64 (zero-pad 64)';
    ``unit`` names what is counted where a unit is more than a row or feature: 'out: base
    wider 4 <- 2 heads of 16 (zero-pad 2)'."""
    case, words = side_text(base, target)
    if unit:  # after the counts, before the padded or dropped count in brackets
        head, bracket, rest = words.partition(" (")
        words = f"{head} {unit}" + (f"{bracket}{rest}" if bracket else "")
    return f"{side}: {words}" + (" (fixed)" if fixed and case == "equal" else "")


def case_text(base_out: int, target_out: int, base_in: int, target_in: int,
              out_fixed: bool = False, in_fixed: bool = False, out_unit: str = "",
              in_unit: str = "") -> str:
    return (f"{describe_side('out', base_out, target_out, out_fixed, out_unit)}; "
            f"{describe_side('in', base_in, target_in, in_fixed, in_unit)}")


def unit_words(heads: bool, grouped: bool, block: int) -> str:
    """What one unit of a layer side is where it spans ``block`` > 1 rows or features:
    "heads of 16" (an attention head's dims), "head groups of 32" (the query heads sharing a
    key/value head), "blocks of 49" (a channel's H*W features after a flatten, say); "" for
    one row or feature. The case counts these, the weight's shape counts rows."""
    if block <= 1:
        return ""
    what = ("head groups" if grouped else "heads") if heads else "blocks"
    return f"{what} of {block}"


@dataclass(frozen=True)
class LayerShape:
    """What the rule book needs to know about one weight layer.

    Units are counted in the layer's permutation spaces: an axis of ``tiles`` copies of
    ``units`` x ``block`` entries (a fused QKV projection: 3 tiles of heads x head dims; an
    LSTM: 4 gates of hidden units) has ``units`` units. Sizes are read from the (out, in)
    orientation whatever the storage (GPT-2's Conv1D stores (in, out): ``transposed``).
    """

    name: str
    kind: str
    out_units: int
    in_units: int
    in_block: int
    kernel: tuple[int, ...]
    out_fixed: bool
    in_fixed: bool
    has_bias: bool
    out_reason: str = ""  # why a fixed side is fixed: "class output", "network input", ...
    in_reason: str = ""
    out_block: int = 1
    out_tiles: int = 1
    in_tiles: int = 1
    transposed: bool = False
    directions: int = 1  # 2 for a bidirectional recurrent layer
    # entries per input unit on the axis itself (a conv channel's H*W after flatten), before
    # attention heads count as units (in_block then also holds a head's dims and, for
    # grouped-query heads, their copies); 0: the same as in_block
    in_axis_block: int = 0
    out_unit: str = ""  # what the case counts on each side (``unit_words``), "" for rows
    in_unit: str = ""

    @staticmethod
    def of(layer: Layer, spec: PermutationSpec, weight_shape: tuple[int, ...]) -> "LayerShape":
        out_space = spec.spaces.get(layer.out_axis.space)
        in_space = spec.spaces.get(layer.in_axis.space)
        # attention heads count as units here, their dims a block (graph.spec.head_blocks)
        (out_dims, out_segs), (in_dims, in_segs) = (head_blocks(spec, layer.out_axis),
                                                    head_blocks(spec, layer.in_axis))
        # a grouped-query head's dims appear once per query head of its group: one block
        out_block = max(1, layer.out_axis.block) * out_dims * layer.out_axis.repeat
        out_tiles = max(1, layer.out_axis.tiles) * out_segs
        in_block = max(1, layer.in_axis.block) * in_dims * layer.in_axis.repeat
        in_tiles = max(1, layer.in_axis.tiles) * in_segs
        out_dim, in_dim = (1, 0) if layer.transposed else (0, 1)
        return LayerShape(layer.name, layer.kind,
                          int(weight_shape[out_dim]) // (out_block * out_tiles),
                          int(weight_shape[in_dim]) // (in_block * in_tiles), in_block,
                          tuple(layer.kernel),
                          bool(out_space and out_space.fixed), bool(in_space and in_space.fixed),
                          layer.bias is not None, out_space.reason if out_space else "",
                          in_space.reason if in_space else "", out_block, out_tiles, in_tiles,
                          layer.transposed,
                          2 if "weight_ih_reverse" in recurrent_riders(layer.weight, spec.axes)
                          else 1, max(1, layer.in_axis.block),
                          _unit(spec, layer.out_axis, out_block), _unit(spec, layer.in_axis,
                                                                        in_block))

    @property
    def in_features(self) -> int:
        """Entries of the input axis (units x block x tiles)."""
        return self.in_units * self.in_block * self.in_tiles


def _unit(spec: PermutationSpec, axis: Axis, block: int) -> str:
    """``unit_words`` for a layer side on ``axis`` (``block`` rows or features per unit)."""
    return unit_words(axis.space in spec.head_groups, axis.repeat > 1, block)


def _stacking(layer: LayerShape, side: str) -> str:
    """How one side of a layer lays out its units, in words, for a refusal."""
    block, tiles = ((layer.out_block, layer.out_tiles) if side == "out"
                    else (layer.in_block, layer.in_tiles))
    what = "outputs" if side == "out" else "inputs"
    if layer.kind in RECURRENT_KINDS and side == "out":
        how = f"{tiles} gates of each hidden unit"
    elif tiles > 1:
        how = f"{tiles} stacked copies of its units"
    else:
        how = "one copy of its units"
    if block > 1:
        how += f", {block} {'rows' if side == 'out' else 'features'} per unit"
    stored = " (stored in, out)" if layer.transposed else ""
    # the plain count first: "4096 outputs" and "11008 outputs" say most of it at a glance
    count = (layer.out_units * layer.out_block * layer.out_tiles if side == "out"
             else layer.in_features)
    return f"{layer.name}{stored} {what}: {count}, {how}"


def _layout_mismatch(base: LayerShape, target: LayerShape) -> str:
    """Why the two layers' unit layouts cannot line up ("" when they can).

    The storage orientation alone never matters (a transposed weight is read as (out, in));
    what a generalized permutation cannot bridge is a different number of stacked copies
    (tiles: gates, fused Q/K/V) or of rows per output unit (head dimensions) on either side.
    """
    if (base.out_block, base.out_tiles) != (target.out_block, target.out_tiles):
        return (f"their output layouts differ ({_stacking(target, 'out')}; "
                f"{_stacking(base, 'out')}): no unit map can line them up")
    if base.directions != target.directions:
        two, one = (base, target) if base.directions > target.directions else (target, base)
        return (f"{two.name} is bidirectional, {one.name} runs one way: the reverse direction "
                "has no partner")
    if base.in_tiles != target.in_tiles and not base.in_fixed:
        return (f"their input layouts differ ({_stacking(target, 'in')}; "
                f"{_stacking(base, 'in')}): no unit map can line them up")
    return ""


def check_layers(base: LayerShape, target: LayerShape) -> StepCheck:
    """The rule book: can ``target`` (a zoo layer) merge into ``base``; and which width case."""
    text = case_text(base.out_units, target.out_units, base.in_units, target.in_units,
                     base.out_fixed, base.in_fixed, base.out_unit, base.in_unit)
    for layer in (base, target):
        if layer.kind not in MERGEABLE_KINDS:
            return StepCheck(False, f"merging {layer.kind} layers ({layer.name}) is not supported: "
                                    "only linear, conv2d and recurrent layers", text)
    if base.kind != target.kind:
        return StepCheck(False, f"cannot merge a {target.kind} layer into a {base.kind} layer "
                                f"({target.name} -> {base.name})", text)
    if base.kernel != target.kernel:
        return StepCheck(False, f"kernel {kernel_text(target.kernel)} of {target.name} cannot "
                                f"merge into kernel {kernel_text(base.kernel)} of {base.name}", text)
    if base.out_fixed and base.out_units != target.out_units:
        what = ("writes the class outputs" if base.out_reason == CLASS_OUTPUT
                else f"has fixed outputs ({base.out_reason or 'not permutable'})")
        return StepCheck(False, f"{base.name} {what} ({base.out_units}); "
                                f"{target.name} has {target.out_units} outputs", text)
    if base.in_fixed and base.in_features != target.in_features:
        what = ("reads the network input" if base.in_reason == NETWORK_INPUT
                else f"has fixed inputs ({base.in_reason or 'not permutable'})")
        return StepCheck(False, f"{base.name} {what} "
                                f"({base.in_features} features); {target.name} reads "
                                f"{target.in_features}", text)
    # The reverse direction: a donor's class scores or raw input features are not hidden units,
    # and no permutation can make them stand in for a hidden layer's.
    if target.out_reason == CLASS_OUTPUT and base.out_reason != CLASS_OUTPUT:
        return StepCheck(False, f"{target.name} writes its model's class outputs; they cannot "
                                f"merge into {base.name}, which writes hidden units", text)
    if target.in_reason == NETWORK_INPUT and base.in_reason != NETWORK_INPUT:
        return StepCheck(False, f"{target.name} reads its model's network input; it cannot "
                                f"merge into {base.name}, which reads hidden units", text)
    if base.in_block != target.in_block and not base.in_fixed:
        base_axis, target_axis = (base.in_axis_block or base.in_block,
                                  target.in_axis_block or target.in_block)
        if base_axis == target_axis:  # heads of other sizes, or grouped-query copies
            return StepCheck(False, f"cannot merge {target.name} into {base.name}: their input "
                                    f"layouts differ ({_stacking(target, 'in')}; "
                                    f"{_stacking(base, 'in')}): no unit map can line them up",
                             text)
        return StepCheck(False, f"spatial sizes differ: each input channel of {base.name} spans "
                                f"{base_axis} features, of {target.name} {target_axis}", text)
    mismatch = _layout_mismatch(base, target)
    if mismatch:
        return StepCheck(False, f"cannot merge {target.name} into {base.name}: {mismatch}", text)
    return StepCheck(True, "", text, units_text(base))


def units_text(layer: LayerShape) -> str:
    """What the width case counts on each side of ``layer`` where a unit is more than one row
    or feature: "out: 128 rows = 4 units of 32" for a query projection whose heads move as
    blocks, "in: 784 features = 16 units of 49" after a flatten, "out: 256 rows = 4 x 64 units"
    for an LSTM's gates. Empty when every unit is one row and one feature ("out 4" for a
    128-row layer read as a mistake)."""
    parts = []
    for side, units, block, tiles, what in (
            ("out", layer.out_units, layer.out_block, layer.out_tiles, "rows"),
            ("in", layer.in_units, layer.in_block, layer.in_tiles, "features")):
        if block == 1 and tiles == 1:
            continue
        count = f"{tiles} x {units} units" if tiles > 1 else f"{units} units"
        parts.append(f"{side}: {units * block * tiles} {what} = {count}"
                     + (f" of {block}" if block > 1 else ""))
    return "; ".join(parts)


def _weight_shape(tree, key: str) -> tuple[int, ...] | None:
    stack = [tree.root]
    while stack:
        node = stack.pop()
        for t in node.tensors:
            if t.key == key:
                return tuple(t.shape)
        stack.extend(node.children)
    return None


def layer_shape(tree, layer_name: str) -> LayerShape | None:
    """The LayerShape of weight layer ``layer_name`` in a core LayerTree, or None."""
    try:
        layer = tree.spec.layer(layer_name)
    except KeyError:
        return None
    shape = _weight_shape(tree, layer.weight)
    return None if shape is None else LayerShape.of(layer, tree.spec, shape)


def check_step(base_tree, donor_tree, source_layer: str, base_layer: str) -> StepCheck:
    """Can layer ``source_layer`` of the donor merge into ``base_layer`` of the base (trees)?"""
    base = layer_shape(base_tree, base_layer)
    if base is None:
        return StepCheck(False, f"{base_layer} is not a weight layer of {base_tree.model_name}")
    target = layer_shape(donor_tree, source_layer)
    if target is None:
        return StepCheck(False, f"{source_layer} is not a weight layer of {donor_tree.model_name}")
    return check_layers(base, target)


@dataclass(frozen=True)
class PreflightReport:
    """Result of checking a plan on file headers: problems (fatal) and an estimate of memory."""

    problems: tuple[str, ...]
    memory_bytes: int

    @property
    def ok(self) -> bool:
        return not self.problems


Shapes = Mapping[str, tuple[int, ...]]


def preflight_plan(plan: AssemblyPlan, shapes: Mapping[str, Shapes]) -> PreflightReport:
    """Shape-level checks on tensor shapes, before any tensor is loaded.

    ``shapes`` maps each path of the plan (base and zoo) to its state's shapes (key -> shape),
    read from a file header (core/io/files.read_header) or from a model already in memory.
    Checks: the models exist in the plan, each step's
    layers exist and carry a weight, weight ranks and conv kernels match. Fixed-axis checks need
    the model graph and run in the assembly job (``check_layers``).

    Memory, beyond the models' files (memory-mapped, read a layer at a time, their pages handed
    back): the merged layers' new tensors, plus the largest working set of one step's
    alignment: for a chain, float32 copies of both models (at most ``CHAIN_WORKING_BYTES``)
    and the cost products the descent keeps, at most as much again (align/products.py); of
    both layers for a local alignment, of the donor layer otherwise. Counted at 4 bytes per
    value, so an upper bound for 16-bit models.
    """
    problems: list[str] = []
    base_shapes = shapes[plan.base]
    merged: dict[str, int] = {}  # base layer -> bytes of its merged weight (one per layer)
    working = 0
    for i, step in enumerate(plan.steps, start=1):
        where = f"step {i} ({step.label})"
        donor_path = plan.zoo.get(step.source)
        if donor_path is None:
            problems.append(f"{where}: zoo model {step.source!r} is not in the plan")
            continue
        donor_shapes = shapes[donor_path]
        b = base_shapes.get(weight_key(step.base_layer, base_shapes))
        t = donor_shapes.get(weight_key(step.source_layer, donor_shapes))
        if b is None:
            problems.append(f"{where}: the base has no layer {step.base_layer!r} with a weight"
                            f"{_suggest(step.base_layer, base_shapes)}")
        if t is None:
            problems.append(f"{where}: {step.source} has no layer {step.source_layer!r} with a "
                            f"weight{_suggest(step.source_layer, donor_shapes)}")
        if b is None or t is None:
            continue
        if len(b) < 2 or len(t) < 2:
            problems.append(f"{where}: {step.base_layer if len(b) < 2 else step.source_layer} is "
                            "not a linear or conv layer (its weight has fewer than 2 axes)")
        elif len(b) != len(t):
            problems.append(f"{where}: cannot merge a {len(t)}-axis weight into a {len(b)}-axis "
                            "weight (linear and conv layers do not mix)")
        elif tuple(b[2:]) != tuple(t[2:]):
            problems.append(f"{where}: kernel {kernel_text(tuple(t[2:]))} cannot merge into "
                            f"kernel {kernel_text(tuple(b[2:]))}")
        base_layer, donor_layer = 4 * math.prod(int(s) for s in b), 4 * math.prod(int(s) for s in t)
        merged[step.base_layer] = base_layer
        if step.align == "chain":  # the copies, and the products kept within their size
            need = 2 * min(CHAIN_WORKING_BYTES,
                           _model_bytes(base_shapes) + _model_bytes(donor_shapes))
        else:
            need = base_layer + donor_layer if step.align == "local" else donor_layer
        working = max(working, need)
    return PreflightReport(tuple(problems), sum(merged.values()) + working)


def weight_key(layer: str, shapes: Mapping[str, object]) -> str:
    """The state key of layer ``layer``'s weight: "<layer>.weight", or for a recurrent layer
    (named after its module, with ".l<k>" when the module stacks several) its input weight
    "<module>.weight_ih_l<k>"."""
    plain = f"{layer}.weight"
    if plain in shapes:
        return plain
    module, _, last = layer.rpartition(".")
    if module and last[:1] == "l" and last[1:].isdigit():
        return f"{module}.weight_ih_{last}"
    return f"{layer}.weight_ih_l0"


def _model_bytes(shapes: Shapes) -> int:
    return sum(math.prod(int(s) for s in shape) * 4 for shape in shapes.values())


def _suggest(name: str, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """:func:`layer_hint` for ``name`` among the weight layers the tensor shapes show."""
    stacked: dict[str, list[str]] = {}  # recurrent module -> its layer numbers
    for key in shapes:
        module, _, last = key.rpartition(".weight_ih_l")
        if module and last.isdigit():
            stacked.setdefault(module, []).append(last)
    layers = sorted({k[: -len(".weight")] for k, s in shapes.items()
                     if k.endswith(".weight") and len(s) >= 2}
                    | {m if len(ks) == 1 else f"{m}.l{k}" for m, ks in stacked.items() for k in ks})
    # from shapes alone an embedding looks like a layer: counted as what it is known to be
    return layer_hint(name, layers, "modules with a matrix weight")


# a model with more weight layers than this gets a count, not the list (a 7B Llama has 225)
LIST_LAYERS = 12


def layer_hint(name: str, layers: Sequence[str], what: str = "weight layers") -> str:
    """What to say after "has no layer NAME" to help fix a typo: the close names, else the
    layers (all of a small model; a count of ``what`` and the first few of a large one)."""
    close = difflib.get_close_matches(name, layers, n=3, cutoff=0.8)
    if close:
        return f" (did you mean {' or '.join(close)}?)"
    if len(layers) <= LIST_LAYERS:
        return f" (its layers: {', '.join(layers)})"
    return (f" (it has {len(layers)} {what}, e.g. {', '.join(layers[:3])}; "
            "mal inspect lists them)")


def kind_note(base_reads_tokens: bool, donor_reads_tokens: bool, donor: str) -> str:
    """A word on a step whose donor reads another kind of data than the base (an image model's
    layer merged into a language model's MLP fits by shape and merges, but its units learned
    other features); "" when both read the same kind."""
    if base_reads_tokens == donor_reads_tokens:
        return ""
    kinds = ("token ids (a language model)", "images or features")
    return (f"{donor} reads {kinds[not donor_reads_tokens]}, the base "
            f"{kinds[not base_reads_tokens]}: its units learned other features")
