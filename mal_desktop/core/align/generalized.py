"""Generalized permutations: partial permutation matrices between a base and a target axis.

For base width m and target width n, a generalized permutation Q in {0,1}^{m x n} has exactly
k = min(m, n) ones, at most one per row and column (mal_method.md sec. 3):

- m = n: an ordinary permutation;
- m > n (base wider): every target unit gets its own base slot, m - n base slots stay empty
  (they receive zeros: "zero-padding");
- m < n (base narrower): m of the n target units are selected, n - m are dropped.

A tensor of the target is mapped into the base's shape by applying one Q per permutable axis,
T(W) = Q_out W Q_in^T generalised to any number of axes and to axes whose units own ``block``
consecutive entries (a linear layer after ``flatten`` reads H*W features per channel).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import AlignmentError
from ..graph.spec import expand_index


@dataclass(frozen=True)
class Match:
    """A generalized permutation between ``base_size`` base slots and ``target_size`` target units.

    rows: base slots that receive a target unit, strictly ascending.
    cols: ``cols[i]`` is the target unit placed into base slot ``rows[i]``; all distinct.
    copies: on a space that grouped-query axes repeat (``graph.spec.Axis``), the query heads
        of each group reordered: one tuple per head of matched pairs (``span`` consecutive
        pairs, in row order), copy k of the base head taking copy ``copies[g][k]`` of its target
        head. Empty: copies in order (and on every other axis copies mean nothing).
    Exactly k = min(base_size, target_size) pairs. Plain tuples keep the object immutable, hashable
    and safe to hand to another thread.
    """

    base_size: int
    target_size: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    copies: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        k = min(self.base_size, self.target_size)
        if self.base_size < 0 or self.target_size < 0:
            raise AlignmentError(f"negative size in match {self.base_size} <- {self.target_size}")
        if len(self.rows) != k or len(self.cols) != k:
            raise AlignmentError(
                f"a match {self.base_size} <- {self.target_size} needs {k} pairs, "
                f"got {len(self.rows)} rows and {len(self.cols)} cols")
        # map(operator.lt) and min / max iterate in C: a match is built at every coordinate-
        # descent step, and generator expressions here cost more than the step's other bookkeeping
        if not all(map(operator.lt, self.rows, self.rows[1:])):
            raise AlignmentError("match rows must be strictly ascending")
        if k and (self.rows[0] < 0 or self.rows[-1] >= self.base_size):
            raise AlignmentError(f"match rows out of range 0..{self.base_size - 1}")
        if len(set(self.cols)) != k or (k and (min(self.cols) < 0
                                               or max(self.cols) >= self.target_size)):
            raise AlignmentError(f"match cols must be distinct units in 0..{self.target_size - 1}")
        if self.copies:
            repeat = len(self.copies[0])
            if k % len(self.copies) or any(sorted(c) != list(range(repeat))
                                           for c in self.copies):
                raise AlignmentError(f"match copy orders must be one permutation of the copies "
                                     f"per head of matched pairs (got {len(self.copies)} for "
                                     f"{k} pairs)")

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def identity(cls, base_size: int, target_size: int) -> Match:
        """The truncated identity: unit i to slot i for i < min(m, n) (naive index alignment)."""
        k = min(base_size, target_size)
        return cls(base_size, target_size, tuple(range(k)), tuple(range(k)))

    @classmethod
    def from_lap(cls, rows: torch.Tensor | Sequence[int], cols: torch.Tensor | Sequence[int],
                 base_size: int, target_size: int) -> Match:
        """Build from an assignment (rows, cols) in any order, e.g. from :func:`solve_lap`."""
        rows_list, cols_list = _int_list(rows), _int_list(cols)
        if len(rows_list) != len(cols_list):
            raise AlignmentError("assignment rows and cols differ in length")
        if all(map(operator.lt, rows_list, rows_list[1:])):  # already in order (solve_lap's)
            return cls(base_size, target_size, tuple(rows_list), tuple(cols_list))
        pairs = sorted(zip(rows_list, cols_list))
        return cls(base_size, target_size, tuple(r for r, _ in pairs), tuple(c for _, c in pairs))

    @classmethod
    def from_permutation(cls, perm: torch.Tensor | Sequence[int]) -> Match:
        """A square match from a permutation p (base slot i takes target unit p[i])."""
        p = [int(v) for v in (perm.tolist() if isinstance(perm, torch.Tensor) else perm)]
        return cls(len(p), len(p), tuple(range(len(p))), tuple(p))

    @classmethod
    def random(cls, base_size: int, target_size: int, generator: torch.Generator) -> Match:
        """A uniformly random generalized permutation (for random restarts)."""
        k = min(base_size, target_size)
        rows = torch.randperm(base_size, generator=generator)[:k]
        cols = torch.randperm(target_size, generator=generator)[:k]
        return cls.from_lap(rows, cols, base_size, target_size)

    # -- views ------------------------------------------------------------------------------
    @property
    def matched(self) -> int:
        """Number of pairs k = min(m, n)."""
        return len(self.rows)

    @property
    def padded(self) -> int:
        """Base slots left empty (zero-padded) because the base is wider: m - k."""
        return self.base_size - self.matched

    @property
    def dropped(self) -> int:
        """Target units not used because the base is narrower: n - k."""
        return self.target_size - self.matched

    @property
    def case(self) -> str:
        """The base relative to the target: "wider", "equal" or "narrower"."""
        if self.base_size > self.target_size:
            return "wider"
        if self.base_size < self.target_size:
            return "narrower"
        return "equal"

    @property
    def is_identity(self) -> bool:
        """True for the truncated identity (nothing moved)."""
        return (self.rows == self.cols and self.rows == tuple(range(self.matched))
                and not self.copies)

    def with_copies(self, copies: Sequence[Sequence[int]]) -> Match:
        """This match with the copy orders ``copies`` (see the class docstring); copies all in
        order are stored as none, so that the match equals the one without them."""
        ordered = tuple(tuple(int(k) for k in c) for c in copies)
        if all(c == tuple(range(len(c))) for c in ordered):
            ordered = ()
        return Match(self.base_size, self.target_size, self.rows, self.cols, ordered)

    def copy_order_tensor(self, device: torch.device | str | None = None) -> torch.Tensor | None:
        """``copies`` as a (heads, repeat) tensor for ``expand_index``, or None when in order."""
        if not self.copies:
            return None
        return torch.tensor(self.copies, dtype=torch.long, device=device)

    def rows_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.tensor(self.rows, dtype=torch.long, device=device)

    def cols_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.tensor(self.cols, dtype=torch.long, device=device)

    def matrix(self, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
        """The dense m x n {0,1} matrix Q (Q[rows[i], cols[i]] = 1)."""
        q = torch.zeros(self.base_size, self.target_size, dtype=dtype, device=device)
        if self.matched:
            q[self.rows_tensor(device), self.cols_tensor(device)] = 1
        return q

    def matched_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool vector over base slots: True where the slot received a target unit."""
        mask = torch.zeros(self.base_size, dtype=torch.bool, device=device)
        if self.matched:
            mask[self.rows_tensor(device)] = True
        return mask

    def source_index(self) -> tuple[int, ...]:
        """Per base slot, the target unit it receives, or -1 for a padded slot."""
        if self.base_size <= self.target_size:  # rows are then 0..m-1: no slot is padded
            return self.cols
        source = [-1] * self.base_size
        for r, c in zip(self.rows, self.cols):
            source[r] = c
        return tuple(source)

    def dropped_units(self) -> tuple[int, ...]:
        """Target units that got no base slot (ascending)."""
        used = set(self.cols)
        return tuple(u for u in range(self.target_size) if u not in used)

    def permutation(self) -> torch.Tensor:
        """For a square match, the permutation p usable with ``spec.permute_state``.

        Raises:
            AlignmentError: the match is not square.
        """
        if self.base_size != self.target_size:
            raise AlignmentError(
                f"a {self.base_size} <- {self.target_size} match is not a permutation")
        return self.cols_tensor()


def _int_list(values: torch.Tensor | Sequence[int]) -> list[int]:
    """``values`` as a list of Python ints (an integer tensor's ``tolist`` already is one)."""
    if isinstance(values, torch.Tensor):
        if not (values.is_floating_point() or values.is_complex() or values.dtype == torch.bool):
            return values.tolist()
        values = values.tolist()
    return [int(v) for v in values]


def kernel_text(kernel: Sequence[int]) -> str:
    """A spatial kernel size as users write it: (3, 3) -> "3x3"."""
    return "x".join(str(int(v)) for v in kernel)


def side_text(base: int, target: int) -> tuple[str, str]:
    """(case, words) for one side: case 'wider' | 'equal' | 'narrower' (the base relative to
    the target), words e.g. 'base wider 128 <- 64 (zero-pad 64)'."""
    if base > target:
        return "wider", f"base wider {base} <- {target} (zero-pad {base - target})"
    if base < target:
        return "narrower", f"base narrower {base} <- {target} (drop {target - base})"
    return "equal", f"equal {base}"


@dataclass(frozen=True)
class ShapeCase:
    """Which of the nine width cases a layer pair is in (sizes in units; in-side in blocks).

    out / inp: "wider", "equal" or "narrower" (the base relative to the target).
    text: one human-readable line, e.g. "out: base wider 128 <- 64 (zero-pad 64); in: equal 64".
    """

    out: str
    inp: str
    out_base: int
    out_target: int
    in_base: int
    in_target: int
    text: str


def shape_case(base_w_shape: Sequence[int], target_w_shape: Sequence[int],
               in_block: Layout = 1, out_layout: Layout = 1) -> ShapeCase:
    """Classify a weight pair by the sizes of axis 0 (out) and axis 1 (in, counted in units).

    Parameters:
        base_w_shape, target_w_shape: weights in (out, in, *kernel) orientation, at least 2-D.
        in_block: entries per input unit (H*W for a linear after flatten), or (block, tiles).
        out_layout: the same for the output axis: (head dims, 3) for a fused QKV projection,
            (1, 4) for an LSTM's gate-stacked rows.
    Returns:
        The :class:`ShapeCase`.
    Raises:
        AlignmentError: a shape has fewer than 2 axes, or an axis is not a multiple of its
        layout (block x tiles).
    """
    if len(base_w_shape) < 2 or len(target_w_shape) < 2:
        raise AlignmentError(
            f"weights need an output and an input axis, got shapes {tuple(base_w_shape)} "
            f"and {tuple(target_w_shape)}")
    sizes = []
    for dim, layout in ((0, out_layout), (1, in_block)):
        block, tiles = split_layout(layout)
        for shape in (base_w_shape, target_w_shape):
            if shape[dim] % (block * tiles):
                raise AlignmentError(
                    f"{('output', 'input')[dim]} axis of {shape[dim]} features is not a multiple "
                    f"of the block {block}" + (f" x {tiles} tiles" if tiles > 1 else ""))
        sizes.append((int(base_w_shape[dim]) // (block * tiles),
                      int(target_w_shape[dim]) // (block * tiles)))
    (ob, ot), (ib, it) = sizes
    out_case, out_text = side_text(ob, ot)
    in_case, in_text = side_text(ib, it)
    return ShapeCase(out_case, in_case, ob, ot, ib, it, f"out: {out_text}; in: {in_text}")


# block, (block, tiles) or (block, tiles, repeat, span): see graph.spec.Axis (``Axis.layout``)
Layout = int | tuple[int, ...]
AxisMatches = Mapping[int, tuple[Match, Layout]]


def split_layout(layout: Layout) -> tuple[int, int]:
    """(block, tiles) of a layout for counting: entries per unit are block * tiles (a repeated
    layout's copies count as tiles here; :func:`full_layout` keeps them apart)."""
    block, tiles, repeat, _ = full_layout(layout)
    return block, tiles * repeat


def full_layout(layout: Layout) -> tuple[int, int, int, int]:
    """(block, tiles, repeat, span) of any layout form."""
    if isinstance(layout, tuple):
        block, tiles = int(layout[0]), int(layout[1])
        if len(layout) > 2:
            return block, tiles, int(layout[2]), int(layout[3])
        return block, tiles, 1, 1
    return int(layout), 1, 1, 1


def canonical_axis(t: torch.Tensor, dim: int, layout: Layout) -> tuple[torch.Tensor, Layout]:
    """A repeated layout's axis reordered into ``repeat`` tiles of the plain layout (copy k of
    every unit, in unit order, then copy k + 1): what unit-by-unit costs and slices need; other
    layouts as they are."""
    block, tiles, repeat, span = full_layout(layout)
    if repeat == 1:
        return t, (block, tiles)
    units = t.shape[dim] // (block * tiles * repeat)
    u = torch.arange(units, device=t.device)
    k = torch.arange(repeat, device=t.device)
    index = (((u // span) * repeat)[None, :] + k[:, None]) * span + (u % span)[None, :]
    index = expand_index(index.reshape(-1), block, tiles, units * repeat)
    return torch.index_select(t, dim, index), (block, tiles * repeat)


def _entry_units(units: int, layout: Layout, device: torch.device | None = None) -> torch.Tensor:
    """The unit of each entry of an axis of ``units`` units, in the axis's order."""
    block, tiles, repeat, span = full_layout(layout)
    e = torch.arange(units * block * tiles * repeat, device=device) % (units * block * repeat)
    x = e // block
    if repeat == 1:
        return x
    return (x // (span * repeat)) * span + x % span


def unit_slices(t: torch.Tensor, dim: int, layout: Layout = 1) -> torch.Tensor:
    """The entries of each unit of axis ``dim`` as one row: a (units, rest) view or copy.

    A unit owns ``block`` consecutive entries of the axis in each of its ``tiles`` copies, and
    every entry of the other axes; row i gathers them all (in a fixed order, the same for every
    unit, so rows of two tensors that agree off ``dim`` can be compared entry by entry).
    """
    t, layout = canonical_axis(t, dim, layout)
    block, tiles = split_layout(layout)
    moved = torch.movedim(t, dim, 0)
    units = t.shape[dim] // (block * tiles)
    return moved.reshape(tiles, units, -1).transpose(0, 1).reshape(units, -1)


def transform_tensor(t: torch.Tensor, matches: AxisMatches,
                     base_shape: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Map a target tensor into the base's shape: T(W) = Q_out W Q_in^T for any number of axes.

    For every axis d in ``matches`` with (match, block), the target entries of units ``cols``
    (each unit owning ``block`` consecutive entries) go to base slots ``rows``; other base slots
    get zeros. Axes not in ``matches`` are copied as they are (kernel spatial axes, fixed axes).

    Parameters:
        t: target tensor; its size on each mapped axis must be ``match.target_size * block``.
        matches: axis -> (Match, block).
        base_shape: when given, the result must have exactly this shape; unmapped axes are checked
            against it so a size mismatch is reported instead of producing a wrong shape.
    Returns:
        (out, mask): ``out`` in base shape, same dtype and device as ``t``; ``mask`` a bool tensor
        of the same shape, True where every mapped axis was matched (the entry came from ``t``).
    Raises:
        AlignmentError: an axis size disagrees with its match, or with ``base_shape``.
    """
    out = t
    mask_parts: list[tuple[int, torch.Tensor]] = []
    for dim in sorted(matches):
        match, layout = matches[dim]
        block, tiles = split_layout(layout)
        _, _, repeat, span = full_layout(layout)
        if dim < 0 or dim >= t.ndim:
            raise AlignmentError(f"axis {dim} does not exist in a tensor of shape {tuple(t.shape)}")
        if t.shape[dim] != match.target_size * block * tiles:
            raise AlignmentError(
                f"axis {dim} of a target tensor of shape {tuple(t.shape)} has {t.shape[dim]} "
                f"entries, expected {match.target_size} units x block {block} x {tiles} tiles")
        tiles //= repeat  # the layout's own tiles; its copies are listed by expand_index
        order = match.copy_order_tensor(t.device) if repeat > 1 else None
        if order is not None and len(match.copies) * span != match.matched:
            raise AlignmentError(f"axis {dim}: copy orders for {len(match.copies)} heads of "
                                 f"{span}, but {match.matched} matched units")
        rows = expand_index(match.rows_tensor(t.device), block, tiles, match.base_size,
                            repeat, span)
        cols = expand_index(match.cols_tensor(t.device), block, tiles, match.target_size,
                            repeat, span, order)
        picked = torch.index_select(out, dim, cols)
        if match.padded == 0 and (repeat == 1 or match.matched % span == 0):
            # rows are then 0..m-1 in order: the selection already is the base layout.
            out = picked
        else:
            shape = list(out.shape)
            shape[dim] = match.base_size * block * tiles * repeat
            out = torch.zeros(shape, dtype=t.dtype, device=t.device).index_copy_(dim, rows, picked)
        slot_mask = match.matched_mask(t.device)[_entry_units(match.base_size, layout, t.device)]
        mask_parts.append((dim, slot_mask))
    if base_shape is not None:
        if len(base_shape) != out.ndim:
            raise AlignmentError(
                f"target tensor has {out.ndim} axes, the base tensor {len(base_shape)}")
        for dim, (got, want) in enumerate(zip(out.shape, base_shape)):
            if got != want:
                raise AlignmentError(
                    f"axis {dim} differs and is not permutable: base {want}, target {got}")
    mask = torch.ones(out.shape, dtype=torch.bool, device=t.device)
    for dim, slot_mask in mask_parts:
        view = [1] * out.ndim
        view[dim] = slot_mask.numel()
        mask = mask & slot_mask.view(view)
    return out, mask


def axis_cost(base: torch.Tensor, target: torch.Tensor, dim: int, block: Layout = 1) -> torch.Tensor:
    """Unit-by-unit inner products along axis ``dim``: the (m x n) cost of one tensor pair.

    ``base`` and ``target`` must agree on every axis except ``dim`` (map the target's other axes
    first with :func:`transform_tensor`). Entry (i, j) is the inner product of base unit i's slice
    with target unit j's slice, where a unit's slice covers its ``block`` entries on ``dim`` (in
    each of the axis's tiles, for a (block, tiles) layout) and all entries of the other axes.
    Returns a tensor in the dtype/device of ``base``.
    """
    base, layout = canonical_axis(base, dim, block)
    target, _ = canonical_axis(target, dim, block)
    block, tiles = split_layout(layout)
    b = torch.movedim(base, dim, 0)
    t = torch.movedim(target.to(base.dtype), dim, 0)
    if b.shape[1:] != t.shape[1:]:
        raise AlignmentError(
            f"tensors disagree off axis {dim}: base {tuple(base.shape)}, "
            f"target {tuple(target.shape)}")
    # Unit i owns rows [i*block, (i+1)*block) of each tile of the moved tensor: viewing it as
    # (tiles, units, rest) and bringing units first keeps a unit's entries together in row i.
    b = b.reshape(tiles, base.shape[dim] // (block * tiles), -1).transpose(0, 1)
    t = t.reshape(tiles, target.shape[dim] // (block * tiles), -1).transpose(0, 1)
    b = b.reshape(b.shape[0], -1)
    t = t.reshape(t.shape[0], -1)
    return b @ t.T
