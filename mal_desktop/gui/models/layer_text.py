"""What a row of the layer tree says: the text of each column and the tooltips.

:class:`~mal_desktop.gui.models.layer_tree_model.QtLayerTreeModel` keeps the structure (lazy
rows, roles, drag and drop); :class:`LayerText` turns one row (a module or a tensor of the core
layer tree) into the words shown for it: name and kind, shape, parameter count, permutation
spaces, statistics, and the explanations of shapes, spaces and fixed axes. Plain Python (no Qt),
so the wording can be read and tested apart from the item model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from ...core.graph.recurrent import RECURRENT_KINDS  # plain Python: no torch at start-up

if TYPE_CHECKING:
    from ...core.graph.spec import Axis, Layer, PermutationSpec
    from ...core.graph.tree import LayerNode, TensorInfo

COLUMNS = ("Name", "Shape", "Parameters", "Permutation space", "Stats (norm / mean / std)")
COL_NAME, COL_SHAPE, COL_PARAMS, COL_SPACE, COL_STATS = range(5)

SPACE_HELP = ("A permutation space is a set of interchangeable units (the neurons of a hidden "
              "layer, the channels of a conv layer, a residual stream). Every tensor axis on the "
              "same space is permuted together, so aligning a zoo layer to the base only "
              "reorders units the network does not care about.")
SHAPE_HELP = ("Weights are out \u00d7 in (\u00d7 kernel for conv layers; GPT-2's Conv1D stores "
              "in \u00d7 out). Merging a zoo layer of another width: where the base side is "
              "wider the zoo units fill some base slots and the rest is zero-padded; where it is "
              "narrower the best-matching zoo units are kept and the others dropped; equal "
              "widths are a plain permutation.")
FIXED_HELP = ("fixed: the units of this space cannot be reordered (the network's input "
              "pixels or its class outputs), so merging matches them by index.")
# Header tooltips, by column.
COLUMN_TIPS = (None, SHAPE_HELP, "Number of values (parameters and buffers)", SPACE_HELP,
               "Frobenius norm, mean and standard deviation of the weight")


class Row(Protocol):
    """What the text of a row needs: a module ``node``, or a ``tensor`` (then node is None);
    its short ``name``; the size and first member of its group of siblings of the same structure."""

    node: LayerNode | None
    tensor: TensorInfo | None
    name: str
    repeat_count: int
    repeat_first: str


def shape_text(shape: Sequence[int]) -> str:
    """'64 \u00d7 16 \u00d7 3 \u00d7 3' (a scalar shows as 'scalar')."""
    return " \u00d7 ".join(str(int(s)) for s in shape) if len(shape) else "scalar"


def count_text(n: int) -> str:
    """A parameter count that fits a narrow column: exact below a million ('16,777'), then
    '202.4 M' and '6.74 B' (the tooltip gives the exact number)."""
    if n < 1_000_000:
        return f"{n:,}"
    if n < 1_000_000_000:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e9:.2f} B"


def stat_text(value: float) -> str:
    """A tensor statistic in four significant digits ('nan' for NaN; exponent form below 10^-3
    and from 10^4), the one format of the column and its tooltip."""
    if value != value:  # NaN
        return "nan"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"


STATS_PENDING_HELP = ("The tree was read from the file's headers, so it shows before the "
                      "weights: their norm, mean and std appear once they are read.")


class LayerText:
    """The words of one model's layer tree.

    Parameters: spec - the model's permutation spec (space sizes, fixed spaces); role - "zoo"
    or "base" (the tooltips say what to drag or drop); model_name - names the root module;
    has_stats - False while the tree comes from the headers (the statistics say they are
    being read). The ``used`` arguments map a layer path to the numbers of the plan steps
    using it.
    """

    def __init__(self, spec: PermutationSpec, role: str, model_name: str,
                 has_stats: bool = True, tied: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.role = role
        self.model_name = model_name
        self.has_stats = has_stats
        self.tied = dict(tied or {})  # state key -> the key whose module counts its parameters

    def _tied_to(self, node: LayerNode | None) -> list[tuple[str, str]]:
        """(own key, shared key) of a module whose parameters are another module's (tied
        weights: an lm_head holding the embedding's matrix), when it has no others."""
        if node is None or node.params or not node.tensors:
            return []
        return [(t.key, self.tied[t.key]) for t in node.tensors if t.key in self.tied]

    def _block_size(self, path: str) -> int:
        """How many weight layers module ``path`` holds, when it is not one itself."""
        from ...core.merge.blocks import block_layers  # torch: not on the start-up path

        return len(block_layers(self.spec, path))

    def space(self, space_id: str | None) -> str:
        """'hidden0 (64)', 'input (784, fixed)', or a dash for no space (fixed: see
        :data:`FIXED_HELP`)."""
        if space_id is None:
            return "\u2013"
        space = self.spec.spaces.get(space_id)
        if space is None:
            return space_id
        return f"{space_id} ({space.size}{', fixed' if space.fixed else ''})"

    def fixed_axes(self, tensor: TensorInfo) -> list[tuple[int, str]]:
        """(axis, reason) for each axis of ``tensor`` on a *fixed space* (input, class output).

        Axes that are simply not permutable (conv kernel positions) are not listed: they are
        never aligned, so marking them would only add noise.
        """
        out = []
        for axis, sid in enumerate(tensor.axes):
            space = self.spec.spaces.get(sid) if sid is not None else None
            if space is not None and space.fixed:
                out.append((axis, space.reason or "fixed"))
        return out

    def display(self, row: Row, col: int, tensor: TensorInfo | None,
                used: Mapping[str, list[int]]) -> str:
        """The text of column ``col``; ``tensor`` is the row's tensor or its module's weight."""
        node = row.node
        if col == COL_NAME:
            return self._name(row, used) if node is not None else row.name
        if col == COL_SHAPE:
            return shape_text(tensor.shape) if tensor is not None else ""
        if col == COL_PARAMS:
            if self._tied_to(node):
                return "tied"  # not "0": the module holds a matrix, counted where it is shared
            n = node.params if node is not None else (tensor.numel if tensor is not None else 0)
            return count_text(int(n))
        if col == COL_SPACE:
            if node is not None and node.layer is not None:
                return (f"out {self.space(node.layer.out_axis.space)} \u00b7 "
                        f"in {self.space(node.layer.in_axis.space)}")
            if node is None and tensor is not None:
                return ", ".join(self.space(s) if s else "\u2013" for s in tensor.axes)
            if node is not None and node.tensors:
                # A norm or other module riding along: the spaces its tensors follow.
                spaces = dict.fromkeys(s for t in node.tensors for s in t.axes if s)
                return ("follows " + ", ".join(self.space(s) for s in spaces)
                        if spaces else "")
            return ""
        if col == COL_STATS and tensor is not None and not self.has_stats:
            return "reading the weights\u2026"
        if col == COL_STATS and tensor is not None:
            return (f"\u2016\u00b7\u2016 {stat_text(tensor.norm)}   \u03bc {stat_text(tensor.mean)}"
                    f"   \u03c3 {stat_text(tensor.std)}")
        return ""

    def _name(self, row: Row, used: Mapping[str, list[int]]) -> str:
        node = row.node
        assert node is not None
        kind = node.kind
        if row.repeat_count and node.repeat:
            kind = node.repeat.split("#", 1)[0]  # the block's class, e.g. BasicBlock
        text = f"{row.name} \u00b7 {kind}" if kind and kind != "module" else row.name
        if row.repeat_count:
            if row.name == row.repeat_first:
                text += f"  (\u00d7{row.repeat_count} alike)"
            else:
                text += f"  (like {row.repeat_first})"
        steps = used.get(node.path)
        if steps:
            text += "  \u2192 step " + ", ".join(str(n) for n in steps)
        return text

    def tooltip(self, row: Row, col: int, tensor: TensorInfo | None,
                used: Mapping[str, list[int]]) -> str | None:
        """The tooltip of column ``col`` (None when there is nothing to say)."""
        node = row.node
        lines: list[str] = []
        if node is not None:
            lines.append(f"{node.path or self.model_name}  ({node.kind})")
            if node.layer is not None:
                if self.role == "zoo":
                    lines.append("Drag onto a layer of the base model to add an assembly step.")
                else:
                    lines.append("Drop a zoo layer here to merge it into this layer.")
            elif col == COL_NAME and (n := self._block_size(node.path)):
                if self.role == "zoo":
                    lines.append(f"Drag onto a block of the base model holding the same layers "
                                 f"to merge its {n} layers, one step each.")
                else:
                    lines.append(f"Drop a zoo block holding the same layers here to merge them "
                                 f"into this block's {n} layers, one step each.")
            if row.repeat_count:
                lines.append(f"One of {row.repeat_count} blocks of the same structure (layers "
                             "and shapes; their weights differ), shown collapsed.")
            steps = used.get(node.path)
            if steps:
                lines.append("Used by step " + ", ".join(str(n) for n in steps) + ".")
            if node.layer is not None and col == COL_NAME:
                lines += self.heads_text(node.layer)
        elif row.tensor is not None:
            t = row.tensor
            lines.append(f"{t.key}: {shape_text(t.shape)} {t.dtype}")
        if col == COL_PARAMS:
            tied = self._tied_to(node)
            if tied:
                lines += [f"{own} is {shared} (tied weights): its parameters are counted there"
                          for own, shared in tied]
            else:
                n = node.params if node is not None else (row.tensor.numel if row.tensor else 0)
                lines.append(f"{int(n):,} parameters")
        if col == COL_SHAPE:
            lines.append(SHAPE_HELP)
        elif col == COL_SPACE:
            if node is not None and node.layer is not None:
                lines.append(_layer_axes_text(node.layer))
                lines += self.heads_text(node.layer)
            elif row.tensor is not None:
                for axis, sid in enumerate(row.tensor.axes):
                    lines.append(f"axis {axis}: " + (sid or "not permutable (e.g. kernel "
                                                             "positions)"))
            lines.append(SPACE_HELP)
            if "fixed" in self.display(row, col, tensor, used):
                lines.append(FIXED_HELP)
        elif col == COL_STATS and tensor is not None and not self.has_stats:
            lines.append(STATS_PENDING_HELP)
        elif col == COL_STATS and tensor is not None:
            # The numbers as the column shows them: one format everywhere.
            lines.append(f"norm {stat_text(tensor.norm)}, mean {stat_text(tensor.mean)}, "
                         f"std {stat_text(tensor.std)} over {tensor.numel:,} values")
        if tensor is not None:
            lines += [f"axis {axis} is fixed: {reason}"
                      for axis, reason in self.fixed_axes(tensor)]
        return "\n".join(lines) if lines else None


    def heads_text(self, layer: Layer) -> list[str]:
        """One line per side of ``layer`` on a space of attention heads: heads x dims, which
        layers the dims inside a head move with (Q/K: the other projection scored against;
        V/O: the output projection reading them) or why they are pinned; for heads moving as
        blocks, why their dims keep their order. Empty for a layer without heads."""
        lines = []
        for side, axis in (("Output", layer.out_axis), ("Input", layer.in_axis)):
            group = self.spec.head_groups.get(axis.space)
            if group is None:
                continue
            if group.dim == 1:
                entries = "rows" if side == "Output" else "columns"
                lines.append(f"{side} units: {group.heads} heads moving as blocks "
                             f"({axis.block} {entries} each); dims inside a head pinned: "
                             f"{group.inner_reason or 'no reason recorded'}")
                continue
            parts = []
            inner_ids = list(dict.fromkeys(inner for inner, _ in group.parts))
            for inner in inner_ids:
                segments = [k + 1 for k, (i, _) in enumerate(group.parts) if i == inner]
                why = next((w for i, w in group.parts if i == inner and w), "")
                partners, read = self._inner_partners(layer.name, inner)
                kind = "V/O" if read else "Q/K"
                where = ""
                if len(group.parts) > 1:  # a fused projection: say which of its segments
                    where = ("segments " + " and ".join(map(str, segments))
                             if len(segments) > 1 else f"segment {segments[0]}") + ": "
                with_ = f" with {', '.join(partners)}" if partners else " together"
                tied = f", with {', '.join(partners)}" if partners else ""
                if why:
                    parts.append(f"{where}dims inside a head pinned ({kind}{tied}): {why}")
                else:
                    parts.append(f"{where}dims inside a head move{with_} ({kind})")
            family = [sid for sid, g in self.spec.head_groups.items()
                      if g.family == group.family and sid != axis.space]
            head = f"{side} units: {group.heads} heads \u00d7 {group.dim} dims"
            if axis.repeat > 1:  # grouped-query attention: a key/value head per query group
                head += (f", each written {axis.repeat} times (once per query head reading it; "
                         "the query heads of a group may be reordered among themselves)")
            if family:
                head += f" (heads move with {', '.join(family)})"
            lines.append(head + "; " + "; ".join(parts))
        return lines

    def _inner_partners(self, name: str, inner: str) -> tuple[list[str], bool]:
        """(short names of the other layers with an axis on within-head permutation
        ``inner``, whether some layer reads it on its input axis)."""
        partners: list[str] = []
        read = False
        for other in self.spec.layers:
            for axis, is_in in ((other.out_axis, False), (other.in_axis, True)):
                group = self.spec.head_groups.get(axis.space)
                if group is None or all(i != inner for i, _ in group.parts):
                    continue
                read = read or is_in
                short = other.name.rsplit(".", 1)[-1]
                if other.name != name and short not in partners:
                    partners.append(short)
        return partners, read


__all__ = ["COLUMNS", "COLUMN_TIPS", "COL_NAME", "COL_PARAMS", "COL_SHAPE", "COL_SPACE",
           "COL_STATS", "SHAPE_HELP", "SPACE_HELP", "LayerText", "Row", "count_text",
           "shape_text", "stat_text"]


def _layout_text(axis: Axis, entries: str, recurrent: bool) -> str:
    """', 4 gates per unit', ', 3 stacked copies, 4 rows per unit' or ''."""
    parts = []
    if axis.tiles > 1:
        parts.append(f"{axis.tiles} gates per unit" if recurrent
                     else f"{axis.tiles} stacked copies")
    if axis.block > 1:
        parts.append(f"{axis.block} {entries} per unit")
    return "".join(f", {p}" for p in parts)


def _layer_axes_text(layer: Layer) -> str:
    """Where a weight layer's output and input units live, axis by axis, as stored."""
    out_dim, in_dim = (1, 0) if layer.transposed else (0, 1)
    recurrent = layer.kind in RECURRENT_KINDS
    text = (f"Output units (axis {out_dim}) live in {layer.out_axis.space}"
            f"{_layout_text(layer.out_axis, 'rows', recurrent)}; input units (axis {in_dim}) in "
            f"{layer.in_axis.space}{_layout_text(layer.in_axis, 'features', False)}.")
    if layer.transposed:
        text += " The weight is stored (in, out), as GPT-2's Conv1D does."
    if recurrent:
        text += " The recurrent weights and biases move with the output units."
    return text
