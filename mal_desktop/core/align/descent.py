"""Coordinate descent over paired permutation spaces: the engine of weight matching.

Git Re-Basin weight matching (Ainsworth et al., ICLR 2023) generalised to rectangular spaces
(mal_method.md sec. 4): every optimised base space s holds a generalized permutation from its
paired target space. Coordinate descent visits the spaces in a seeded random order each sweep; for
space s the cost C_s (m x n) sums, over every paired tensor with an axis on s, the unit-by-unit
inner products of the base tensor with the target tensor whose *other* axes are mapped by the
current matches. One rectangular LAP per space; a new match is accepted only when it raises J, so
J never decreases, and the loop stops when a sweep changes nothing. What is built on it (whole-
model and chain matching, applying matches) is in matching.py. The costs are float32 products
reused between visits, J is summed in float64 (products.py).

Running statistics of norms (running mean / var) are left out of the cost: their scale says
nothing about which units correspond (Git Re-Basin matches parameters only).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..device import compute_device
from ..errors import AlignmentError
from ..graph.spec import Axis, PermutationSpec
from ..progress import CancelToken, Job, ProgressEvent, never_cancelled
from .copies import QueryCopies
from .generalized import Layout, Match, canonical_axis, full_layout
from .heads import HeadFamily, head_families, random_family_matches, solve_family
from .lap import LapBuffer, improves, solve_lap
from .products import CostProducts, PairedTensor

STATISTIC_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def is_statistic(key: str) -> bool:
    """True for norm buffers that are mapped but do not enter matching costs."""
    return key.rsplit(".", 1)[-1] in STATISTIC_SUFFIXES


@dataclass(frozen=True)
class MatchResult:
    """Result of :func:`match_spaces`.

    matches: base space -> Match, for every base space on an axis of a paired tensor and every
        key of ``space_pairs`` (optimised or kept at the (truncated) identity).
    objective_history: J before the first sweep, then after each sweep; never decreasing.
    sweeps: sweeps run. converged: the last sweep changed nothing.
    optimised: the base spaces that were solved (free on both sides and paired).
    restart: which run was kept (0 = the run from the identity, -1 = no run beat the identity,
        which was kept). restarts: runs made.
    identity_objective: J of the (truncated) identity, the naive alignment.
    """

    matches: dict[str, Match]
    objective_history: tuple[float, ...]
    sweeps: int
    converged: bool = True
    optimised: tuple[str, ...] = field(default=())
    restart: int = 0
    restarts: int = 1
    identity_objective: float = float("nan")

    @property
    def objective(self) -> float:
        """Final J of the kept run."""
        return self.objective_history[-1]


# Per axis of a paired tensor: (base space or None, its layout: see graph.spec.Axis.layout).
_AxisInfo = tuple[str | None, Layout]
_Pair = PairedTensor


def axes_of(spec: PermutationSpec, key: str, ndim: int) -> tuple:
    axes = spec.axes.get(key)
    if axes is None:
        return (None,) * ndim
    if len(axes) != ndim:
        raise AlignmentError(
            f"{key}: the permutation spec lists {len(axes)} axes, the tensor has {ndim}")
    return tuple(axes)


def check_same_layout(key: str, dim: int, base: Axis, target: Axis) -> None:
    """Raise AlignmentError unless axis ``dim`` of ``key`` lays its units out alike in both
    models (a unit map can only pair units whose entries sit in the same places)."""
    if base.block != target.block:
        raise AlignmentError(f"{key} axis {dim}: {base.block} vs {target.block} features per "
                             "unit (different spatial sizes cannot merge)")
    if base.layout != target.layout:
        raise AlignmentError(f"{key} axis {dim}: units laid out differently (block, tiles, "
                             f"repeat, span {base.layout} vs {target.layout}: stacked copies or "
                             "grouped-query heads of another group size)")


def _pair_spaces(base_state: Mapping[str, torch.Tensor], base_spec: PermutationSpec,
                 target_state: Mapping[str, torch.Tensor], target_spec: PermutationSpec,
                 space_pairs: Mapping[str, str], tensor_pairs: Sequence[tuple[str, str]],
                 ) -> tuple[dict[str, str], list[tuple[str, str, tuple[_AxisInfo, ...]]]]:
    """Check every paired tensor axis by axis; return base->target space map and axis infos."""
    pairs: dict[str, str] = dict(space_pairs)
    infos: list[tuple[str, str, tuple[_AxisInfo, ...]]] = []
    for space in space_pairs:
        if space not in base_spec.spaces:
            raise AlignmentError(f"unknown base space {space!r}")
        if space_pairs[space] not in target_spec.spaces:
            raise AlignmentError(f"unknown target space {space_pairs[space]!r}")
    for bk, tk in tensor_pairs:
        if bk not in base_state:
            raise AlignmentError(f"base model has no tensor {bk!r}")
        if tk not in target_state:
            raise AlignmentError(f"target model has no tensor {tk!r}")
        b, t = base_state[bk], target_state[tk]
        if b.ndim != t.ndim:
            raise AlignmentError(f"{bk}: base has {b.ndim} axes, target {tk} has {t.ndim}")
        b_axes, t_axes = axes_of(base_spec, bk, b.ndim), axes_of(target_spec, tk, t.ndim)
        info: list[_AxisInfo] = []
        for dim, (ba, ta) in enumerate(zip(b_axes, t_axes)):
            if ba is None and ta is None:
                if b.shape[dim] != t.shape[dim]:
                    raise AlignmentError(f"{bk} axis {dim} is not permutable and differs: "
                                         f"base {b.shape[dim]}, target {t.shape[dim]}")
                info.append((None, 1))
                continue
            if ba is None or ta is None:
                raise AlignmentError(f"{bk} axis {dim} is permutable in one model only")
            check_same_layout(bk, dim, ba, ta)
            known = pairs.setdefault(ba.space, ta.space)
            if known != ta.space:
                raise AlignmentError(f"base space {ba.space!r} is paired with target spaces "
                                     f"{known!r} and {ta.space!r} ({bk})")
            for spec, tensor, axis, key in ((base_spec, b, ba, bk), (target_spec, t, ta, tk)):
                size = spec.spaces[axis.space].size if axis.space in spec.spaces else -1
                if tensor.shape[dim] != size * axis.entries:
                    raise AlignmentError(f"{key} axis {dim} has {tensor.shape[dim]} entries, "
                                         f"space {axis.space!r} expects {size} units x "
                                         f"{axis.entries}")
            info.append((ba.space, ba.layout))
        infos.append((bk, tk, tuple(info)))
    seen: dict[str, str] = {}
    for bs, ts in pairs.items():
        if ts in seen and seen[ts] != bs:
            raise AlignmentError(
                f"target space {ts!r} is paired with base spaces {seen[ts]!r} and {bs!r}")
        seen[ts] = bs
    return pairs, infos


def _initial_matches(pairs: Mapping[str, str], space_pairs: Mapping[str, str],
                     base_spec: PermutationSpec, target_spec: PermutationSpec,
                     ) -> tuple[dict[str, Match], list[str]]:
    matches: dict[str, Match] = {}
    free: list[str] = []
    for bs, ts in pairs.items():
        b_space, t_space = base_spec.spaces[bs], target_spec.spaces[ts]
        m, n = b_space.size, t_space.size
        fixed = b_space.fixed or t_space.fixed
        if fixed and m != n:
            reason = b_space.reason or t_space.reason or "fixed"
            raise AlignmentError(f"space {bs!r} is fixed ({reason}) and sizes differ: "
                                 f"base {m}, target {n}")
        matches[bs] = Match.identity(m, n)
        if bs in space_pairs and not fixed:
            free.append(bs)
    return matches, free


def _cost_dtype(base_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor],
                infos: Sequence[tuple[str, str, tuple[_AxisInfo, ...]]],
                device: torch.device) -> torch.dtype:
    """float32, unless a paired tensor is float64 (and the device has float64).

    Float32 products are about twice as fast as float64 ones and their gathers move half the
    bytes (issue 12); the weights of float32, bf16 and fp16 models are exact in float32, and
    J is summed in float64 from exact products (products.dot64), so only the LAP costs are
    rounded: the permutations can differ from float64 costs only between assignments within
    float32 rounding of each other (none on the zoos and planted tests, benchmarks/README.md).
    """
    if device.type == "mps":
        return torch.float32
    for bk, tk, _ in infos:
        if base_state[bk].dtype == torch.float64 or target_state[tk].dtype == torch.float64:
            return torch.float64
    return torch.float32


def _device_pairs(base_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor],
                  infos: Sequence[tuple[str, str, tuple[_AxisInfo, ...]]], device: torch.device,
                  dtype: torch.dtype) -> list[_Pair]:
    """The paired tensors that enter J, copied to the compute device in the working dtype.

    Norm statistics, integer buffers and tensors with no permutable axis are left out: the
    first say nothing about unit correspondence, the last are a constant term of J.
    """
    work: list[_Pair] = []
    for bk, tk, info in infos:
        b, t = base_state[bk], target_state[tk]
        if is_statistic(bk) or not (b.is_floating_point() and t.is_floating_point()):
            continue
        if not any(space is not None for space, _ in info):
            continue  # a constant term of J: no space moves it
        b, t = b.detach().to(device, dtype), t.detach().to(device, dtype)
        # A repeated axis (grouped-query Q rows, O columns: each key/value head's dims once per
        # query head of its group) is reordered once into plain tiles, the same way on both
        # sides: J and every unit-by-unit cost are unchanged by a common reordering, and the
        # products (products.py) then only ever see (block, tiles) layouts.
        plain: list[_AxisInfo] = []
        for dim, (space, layout) in enumerate(info):
            if space is not None and full_layout(layout)[2] > 1:
                b, layout = canonical_axis(b, dim, layout)
                t, _ = canonical_axis(t, dim, info[dim][1])
            plain.append((space, layout))
        work.append(_Pair(bk, b, t, tuple(plain)))
    return work


class _Descent:
    """Coordinate-descent state: the paired tensors, the current matches and, per free space,
    the tensor axes that lie on it."""

    def __init__(self, work: list[_Pair], matches: dict[str, Match], free: Sequence[str],
                 device: torch.device, dtype: torch.dtype,
                 families: Mapping[str, HeadFamily] | None = None,
                 products: CostProducts | None = None,
                 lap_buffer: LapBuffer | None = None) -> None:
        self.work = work
        self.families = dict(families or {})  # head-grouped spaces: solved family by family
        self.matches = matches
        self.device = device
        self.dtype = dtype
        self.touching: dict[str, list[tuple[_Pair, int, int]]] = {s: [] for s in free}
        # Spaces on two axes of one tensor: J is not linear in their match, so the LAP's value
        # is not J's change and a candidate is judged by J itself.
        self.coupled: set[str] = set()
        # A space's LAP cost depends only on the matches of the spaces it shares a tensor with
        # (its neighbours; itself too when coupled). While none of them moved since the space
        # was last solved, solving it again gives the same answer: it is skipped ("stale" holds
        # the spaces that must be solved again). The result is the same as solving every space.
        self.neighbours: dict[str, set[str]] = {s: set() for s in free}
        for pair in work:
            spaces = [s for s, _ in pair.axes if s is not None]
            for dim, (space, block) in enumerate(pair.axes):
                if space in self.touching:
                    self.touching[space].append((pair, dim, block))
                    if spaces.count(space) > 1:
                        self.coupled.add(space)
            on_free = {sp for sp in spaces if sp in self.touching}
            for space in on_free:
                self.neighbours[space] |= on_free
        for space in self.neighbours:
            if space not in self.coupled:
                self.neighbours[space].discard(space)
        self.stale: set[str] = set(free)
        self.solves = 0  # LAPs solved (the skipped ones are not counted)
        self.products = products if products is not None else CostProducts(work, free)
        self.lap_buffer = lap_buffer if lap_buffer is not None else LapBuffer()
        self.on_space: dict[str, list[_Pair]] = {
            s: list({id(p): p for p, _, _ in entries}.values())
            for s, entries in self.touching.items()}

    def mapped(self, pair: _Pair, skip: int | None = None) -> torch.Tensor:
        """The target tensor with every axis but ``skip`` mapped by the current matches."""
        return self.products.mapped(pair, self.matches, skip)

    def objective(self, only: str | None = None) -> float:
        """J over all paired tensors, or over those with an axis on space ``only``; summed in
        float64 whatever the cost dtype (products.dot64)."""
        pairs = self.work if only is None else self.on_space.get(only, [])
        return self.products.objective(pairs, self.matches)

    def space_cost(self, space: str) -> torch.Tensor:
        """The m x n LAP cost of ``space`` with every other space at its current match, in
        the cost dtype; products whose inputs did not change since they were last built are
        reused (products.CostProducts)."""
        return self.products.cost(space, self.matches, self.dtype, self.device)

    def improve_space(self, space: str) -> bool:
        """Solve the LAP of ``space`` (unless no neighbour moved since it was last solved); keep
        its match only when it raises J. True if it did."""
        if space not in self.stale:
            return False
        if space in self.families:
            return self._improve_family(self.families[space])
        self.stale.discard(space)
        self.solves += 1
        if self._better_match(space):
            self.stale |= self.neighbours[space]
            return True
        return False

    def _improve_family(self, family: HeadFamily) -> bool:
        """Solve the spaces of one attention together (align/heads.py); keep the new matches
        only when they raise J (judged on J itself: the spaces may share tensors)."""
        self.stale.difference_update(family.spaces)
        self.solves += 1
        current = {s: self.matches[s] for s in family.spaces}
        candidates = solve_family([self.space_cost(s) for s in family.spaces], family)
        if all(c == current[s] for s, c in zip(family.spaces, candidates)):
            return False
        touched = [p for p in self.work if any(s in current for s, _ in p.axes)]

        def j() -> float:  # in float64 whatever the cost dtype (products.dot64)
            return self.products.objective(touched, self.matches)

        old = j()
        self.matches.update(zip(family.spaces, candidates))
        if improves(j(), old):
            for s in family.spaces:
                self.stale |= self.neighbours[s]
            return True
        self.matches.update(current)
        return False

    def _better_match(self, space: str) -> bool:
        current = self.matches[space]
        cost = self.space_cost(space)
        rows, cols = solve_lap(cost, buffer=self.lap_buffer)
        candidate = Match.from_lap(rows, cols, current.base_size, current.target_size)
        if candidate == current:
            return False
        # The candidate is judged by J itself, summed in float64 over the tensors on the space,
        # not by its LAP value: the cost is float32 (products.py), and its rounding (about 1e-7
        # of an entry) is far above the gain improves() asks for, so a LAP value could show a
        # gain where J has none, or J could drop. J in float64 from exact products keeps J
        # non-decreasing whatever the cost dtype; for a space on two axes of one tensor
        # (coupled) the LAP value is not J's change in any dtype. The extra cost is two
        # gathers and inner products per changed space, against a matrix product per visit;
        # less where few units moved (products.CostProducts.objective_moved).
        old = self.objective(space)
        new = self.products.objective_moved(self.on_space.get(space, []), self.matches, space,
                                            candidate)
        if improves(new, old):
            self.matches[space] = candidate
            return True
        return False


def _sweep(descent: _Descent, order: Sequence[str], cancel: CancelToken) -> bool:
    """One pass of coordinate descent over the free spaces in ``order``; True if a match moved."""
    changed = False
    for space in order:
        cancel.raise_if_cancelled()
        changed = descent.improve_space(space) or changed
    return changed


def match_spaces(
    base_state: Mapping[str, torch.Tensor],
    base_spec: PermutationSpec,
    target_state: Mapping[str, torch.Tensor],
    target_spec: PermutationSpec,
    space_pairs: Mapping[str, str],
    tensor_pairs: Sequence[tuple[str, str]],
    *,
    max_iter: int = 100,
    seed: int = 0,
    restarts: int = 1,
    cancel: CancelToken | None = None,
    cost_dtype: torch.dtype | None = None,
) -> Job[MatchResult]:
    """Job: jointly match paired spaces of a target model to a base model by coordinate descent.

    Coordinate descent finds a local optimum of J that depends on the order in which it visits
    the spaces and on where it starts. ``restarts`` runs are made: the first from the (truncated)
    identity, the others from seeded random matches, each visiting the spaces in its own seeded
    order; the run with the highest final J is kept, and the identity itself when no run beats it
    (so the result is never worse than naive index alignment on J). Where grouped-query
    attention repeats a free space, each sweep also reorders the query heads inside their
    groups (copies.py); the matches then carry the orders (``Match.copies``).

    Parameters:
        base_state, target_state: state dicts (parameters and buffers).
        base_spec, target_spec: their permutation specs.
        space_pairs: base space -> target space to optimise. Fixed spaces (in either model) and
            spaces not listed keep the (truncated) identity; a fixed space must have equal sizes.
        tensor_pairs: (base key, target key) pairs whose axes correspond position by position.
        max_iter: at most this many sweeps per run.
        seed: seeds the visiting orders and the random starts (run r uses seed + r).
        restarts: number of runs (at least 1).
        cancel: checked at every sweep and every space.
        cost_dtype: the dtype of the working tensors and LAP costs; default float32, or float64
            when a paired tensor is float64 (float32 copies would round its weights). J is
            summed in float64 either way.
    Yields:
        One ProgressEvent("align", ...) per sweep, payload {"restart": r (0-based), "sweep": i
        (1-based), "objective": J}.
    Returns:
        A :class:`MatchResult` (its history is the kept run's).
    Raises:
        AlignmentError: missing tensors, axes permutable in one model only, a space paired
        inconsistently, sizes that disagree with the specs, fixed spaces of different sizes.
        Cancelled: the token was set.
    """
    cancel = cancel or never_cancelled()
    pairs, infos = _pair_spaces(base_state, base_spec, target_state, target_spec, space_pairs,
                                tensor_pairs)
    identity, free = _initial_matches(pairs, space_pairs, base_spec, target_spec)
    families = head_families(base_spec, target_spec, pairs, free)
    device = compute_device()
    dtype = cost_dtype or _cost_dtype(base_state, target_state, infos, device)
    work = _device_pairs(base_state, target_state, infos, device, dtype)
    query_families = QueryCopies.find(base_spec, target_spec, pairs, free,
                                      {bk: info for bk, _, info in infos}, work)
    products = CostProducts(work, free)  # one of each serves every run
    lap_buffer = LapBuffer()
    runs = max(1, restarts)
    best: MatchResult | None = None
    identity_j = 0.0
    for run in range(runs):
        matches = dict(identity)
        if run > 0:
            gen = torch.Generator().manual_seed(seed + run)
            for space in sorted(free):
                m = identity[space]
                if space not in families:
                    matches[space] = Match.random(m.base_size, m.target_size, gen)
                elif space == families[space].spaces[0]:  # heads whole, one head map
                    matches.update(random_family_matches(families[space], gen))
        descent = _Descent(work, matches, free, device, dtype, families, products, lap_buffer)
        if run == 0:
            identity_j = descent.objective()
        # grouped-query attention: the query heads' order inside their groups, a coordinate
        # of its own (copies.py), started at random too by the random runs
        copies = QueryCopies(query_families, work) if query_families else None
        if copies is not None and run > 0:
            copies.reorder(copies.random_steps(gen), work, products)
        try:
            result = yield from _descend(descent, free, max_iter, seed + run, cancel,
                                         (run, runs), copies)
        finally:
            if copies is not None:  # the next run starts from the target as given
                copies.restore(work, products)
        if best is None or improves(result.objective_history[-1],
                                    best.objective_history[-1]):
            best = dataclasses.replace(result, restart=run)
    assert best is not None
    if improves(identity_j, best.objective_history[-1]):  # a run ended below naive: keep naive
        best = MatchResult(dict(identity), (identity_j,), 0, True, tuple(sorted(free)), -1)
    return dataclasses.replace(best, restarts=runs, identity_objective=identity_j)


def _copy_step(copies: QueryCopies, descent: _Descent) -> bool:
    """Reorder the target's query heads inside their groups to best match the base at the
    current matches (copies.py), when that raises J; True if it did."""
    steps = copies.best_step(descent.work, descent.matches, descent.products)
    if not any(steps):
        return False
    changed = copies.pairs(steps, descent.work)
    old = descent.products.objective(changed, descent.matches)
    before = copies.reorder(steps, descent.work, descent.products)
    if not improves(descent.products.objective(changed, descent.matches), old):
        copies.undo(before, descent.work, descent.products)
        return False
    for pair in changed:  # their spaces' costs changed: solve them again
        descent.stale |= {s for s, _ in pair.axes if s in descent.touching}
    return True


def _descend(descent: _Descent, free: Sequence[str], max_iter: int, seed: int,
             cancel: CancelToken, run: tuple[int, int], copies: QueryCopies | None = None
             ) -> Job[MatchResult]:
    """One coordinate-descent run from ``descent``'s current matches; ``run`` = (index, runs)
    places its progress in the whole job. With ``copies``, each sweep ends by reordering the
    query heads of grouped-query attention inside their groups where that raises J; the
    result's matches carry the orders."""
    rng = random.Random(seed)
    order = sorted(free)
    history = [descent.objective()]
    sweeps, converged = 0, False
    index, runs = run
    for sweep in range(1, max(1, max_iter) + 1):
        cancel.raise_if_cancelled()
        rng.shuffle(order)
        changed = _sweep(descent, order, cancel)
        if copies is not None and _copy_step(copies, descent):
            changed = True
        sweeps = sweep
        history.append(descent.objective())
        converged = not changed
        done = converged or sweep >= max_iter
        fraction = (index + (1.0 if done else sweep / max_iter)) / runs
        yield ProgressEvent("align", fraction,
                            f"sweep {sweep}: J = {history[-1]:.6g}"
                            + (f" (run {index + 1}/{runs})" if runs > 1 else ""),
                            {"restart": index, "sweep": sweep, "objective": history[-1]})
        if converged:
            break
    matches = copies.attach(descent.matches) if copies is not None else dict(descent.matches)
    return MatchResult(matches, tuple(history), sweeps, converged, tuple(sorted(free)))

