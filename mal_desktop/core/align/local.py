"""Local two-sided alignment of one layer pair (mal_method.md sec. 4).

Maximise J = <W_B, Q_out W_T Q_in^T>_F + <b_B, Q_out b_T> over generalized permutations Q_out
(output side) and Q_in (input side) by alternating rectangular LAPs:

- Q_in fixed: C_out = W_B Q_in W_T^T + b_B b_T^T (m_out x n_out), J = tr(Q_out^T C_out);
- Q_out fixed: C_in = W_B^T Q_out W_T (m_in x n_in), J = tr(Q_in^T C_in) + bias term.

A conv kernel (c_out, c_in, k, k) is read as c_out x (c_in k k) for its output side and
c_in x (c_out k k) for its input side; a linear layer after ``flatten`` has ``in_block`` = H*W
features per input unit. Each half-step solves its LAP exactly, and a new assignment is only
accepted when it raises J, so J never decreases and the loop ends (the set of matches is finite).
This is the fallback when chain alignment (``matching.chain_pairs``) does not apply.

J is bilinear in (Q_out, Q_in): from the truncated identity, with both sides permuted, the
alternation sees no signal and stops in a poor local optimum (it recovered under 10 % of a
planted map in every width case). With both sides free it therefore also starts from *value
profiles*: a unit's sorted weights (the quantiles of its row, or of its column) do not change
when the other side is permuted, padded or extended, so a LAP on the distance between profiles
matches most units of one side with no knowledge of the other; one alternation from there
recovers the whole planted map (all nine width cases, noise 0.1, with or without bias). The
run with the highest J is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..device import compute_device
from ..errors import AlignmentError
from ..progress import CancelToken, Job, ProgressEvent, never_cancelled, run_job, sub_job
from .generalized import (
    Layout,
    Match,
    ShapeCase,
    axis_cost,
    kernel_text,
    shape_case,
    split_layout,
    transform_tensor,
    unit_slices,
)
from .lap import improves, solve_lap


@dataclass(frozen=True)
class LayerAlignment:
    """Result of :func:`align_layer_pair`.

    out / inp: the output-side and input-side generalized permutations.
    objective_history: J at the start (both sides at their initial match) and after every
        half-iteration that was solved; never decreasing.
    costs: the matched entries of the final output-side cost matrix, one per matched base slot
        in slot order (for a histogram of how well units matched).
    case: which of the nine width cases this pair is.
    start: where the kept run started: "identity", "random", "given" (a Match passed as
        ``init``), "out profile" or "in profile" (value profiles, see the module docstring).
    """

    out: Match
    inp: Match
    objective_history: tuple[float, ...]
    costs: tuple[float, ...]
    case: ShapeCase
    start: str = "identity"  # the start of the kept run: see align_layer_pair
    runs: int = 1  # alternations run (one per start); the best J was kept

    @property
    def objective(self) -> float:
        """Final J."""
        return self.objective_history[-1]

    @property
    def initial_objective(self) -> float:
        """J before optimisation (the naive, index-aligned value for ``init="identity"``)."""
        return self.objective_history[0]


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps the accept-if-better test free of rounding noise; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


Role = tuple[str, Layout] | None  # per tensor axis: ("out" | "in", layout), or not permuted


@dataclass(frozen=True)
class Rider:
    """A tensor pair that moves with a layer's units besides its weight and bias.

    roles: per axis, the side it belongs to and its layout (("out", (1, 4)) for the gate-stacked
    rows of an LSTM's hidden weight), or None (an axis no match moves). An axis on the layer's
    output side of a tensor that also has one (a recurrent weight maps the hidden units on both
    axes) couples the output match with itself; the alternation then linearises, as coordinate
    descent does for a space on two axes of one tensor.
    """

    base: torch.Tensor
    target: torch.Tensor
    roles: tuple[Role, ...]


class _Problem:
    """The tensors of one layer pair on the compute device, and the objective."""

    def __init__(self, pairs: Sequence[Rider]) -> None:
        device = compute_device()
        dtype = _work_dtype(device)
        self.pairs = [Rider(p.base.detach().to(device, dtype), p.target.detach().to(device, dtype),
                            p.roles) for p in pairs]
        self.coupled = any(sum(1 for r in p.roles if r is not None and r[0] == "out") > 1
                           for p in pairs)

    @staticmethod
    def _mapped(pair: Rider, q: dict[str, Match], skip: int | None = None) -> torch.Tensor:
        axes = {d: (q[r[0]], r[1]) for d, r in enumerate(pair.roles) if r is not None and d != skip}
        return transform_tensor(pair.target, axes)[0] if axes else pair.target

    def objective(self, q_out: Match, q_in: Match) -> float:
        q = {"out": q_out, "in": q_in}
        return float(sum((p.base * self._mapped(p, q)).sum().item() for p in self.pairs))

    def cost(self, side: str, q_out: Match, q_in: Match) -> torch.Tensor:
        """The LAP cost of ``side`` with every other axis mapped by the current matches."""
        q = {"out": q_out, "in": q_in}
        cost = None
        for p in self.pairs:
            for dim, role in enumerate(p.roles):
                if role is not None and role[0] == side:
                    part = axis_cost(p.base, self._mapped(p, q, skip=dim), dim, role[1])
                    cost = part if cost is None else cost + part
        assert cost is not None  # the weight has both sides
        return cost

    def out_cost(self, q_out: Match, q_in: Match) -> torch.Tensor:
        return self.cost("out", q_out, q_in)

    def in_cost(self, q_out: Match, q_in: Match) -> torch.Tensor:
        return self.cost("in", q_out, q_in)

    def profiles(self, side: str, which: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per unit of ``side`` (base: which 0, target: 1), the value profiles of its slices
        of every tensor with another axis, and the exact values of its 1-D tensors (biases)."""
        profiles, exact = [], []
        for p in self.pairs:
            t = (p.base, p.target)[which]
            for dim, role in enumerate(p.roles):
                if role is not None and role[0] == side:
                    rows = unit_slices(t, dim, role[1])
                    (exact if t.ndim == 1 else profiles).append(
                        rows if t.ndim == 1 else value_profile(rows))
        return torch.cat(profiles, 1), torch.cat(exact, 1) if exact else None


def _check_shapes(pairs: Sequence[Rider], prefix: str) -> None:
    w_base, w_target = pairs[0].base, pairs[0].target
    if w_base.ndim < 2 or w_target.ndim < 2:
        raise AlignmentError(f"{prefix}weights need an output and an input axis, got shapes "
                             f"{tuple(w_base.shape)} and {tuple(w_target.shape)}")
    if w_base.ndim != w_target.ndim:
        kinds = {2: "linear", 4: "conv2d"}
        base_kind = kinds.get(w_base.ndim, f"{w_base.ndim}-D")
        target_kind = kinds.get(w_target.ndim, f"{w_target.ndim}-D")
        raise AlignmentError(
            f"{prefix}cannot align a {base_kind} base layer with a {target_kind} target layer")
    if w_base.shape[2:] != w_target.shape[2:]:
        raise AlignmentError(f"{prefix}kernel {kernel_text(w_base.shape[2:])} vs "
                             f"{kernel_text(w_target.shape[2:])} cannot merge")
    units: dict[tuple[str, int], int] = {}
    for pair in pairs:
        for which, t in (("base", pair.base), ("target", pair.target)):
            if t.ndim != len(pair.roles):
                raise AlignmentError(f"{prefix}{which} tensor of shape {tuple(t.shape)} does not "
                                     f"have the {len(pair.roles)} axes its layer maps")
            for dim, role in enumerate(pair.roles):
                if role is None:
                    continue
                block, tiles = split_layout(role[1])
                if block < 1 or tiles < 1:
                    raise AlignmentError(f"{prefix}input block must be >= 1, got {block}")
                side = "output" if role[0] == "out" else "input"
                if t.shape[dim] % (block * tiles):
                    raise AlignmentError(
                        f"{prefix}{which} {side} axis of {t.shape[dim]} features is not a "
                        f"multiple of the block {block}" + (f" x {tiles} tiles" if tiles > 1 else "")
                        + (" (different spatial sizes?)" if role[0] == "in" else ""))
                n = t.shape[dim] // (block * tiles)
                if units.setdefault((role[0], which == "target"), n) != n:
                    what = "bias" if t.ndim == 1 and pair is pairs[1] else "tensor"
                    raise AlignmentError(
                        f"{prefix}{which} {what} of shape {tuple(t.shape)} does not fit "
                        f"{units[(role[0], which == 'target')]} {side} units")


def _run(problem: _Problem, q_out: Match, q_in: Match, out_fixed: bool, in_fixed: bool,
         max_iter: int, cancel: CancelToken, label: str
         ) -> Job[tuple[Match, Match, list[float]]]:
    """Alternate the two LAPs from (q_out, q_in); returns the final matches and J history.
    Yields one event per round (at LLM widths a round takes about a minute); ``label`` names
    the run in its messages."""
    value = problem.objective(q_out, q_in)
    history = [value]

    for round_ in range(1, max_iter + 1):
        cancel.raise_if_cancelled()
        start = value
        if not out_fixed:
            cost = problem.out_cost(q_out, q_in)
            rows, cols = solve_lap(cost)
            candidate = Match.from_lap(rows, cols, q_out.base_size, q_out.target_size)
            new_value = problem.objective(candidate, q_in)
            if candidate != q_out and improves(new_value, value):
                q_out, value = candidate, new_value
            history.append(value)
            cancel.raise_if_cancelled()
        if not in_fixed:
            cost = problem.in_cost(q_out, q_in)
            rows, cols = solve_lap(cost)
            candidate = Match.from_lap(rows, cols, q_in.base_size, q_in.target_size)
            new_value = problem.objective(q_out, candidate)
            if candidate != q_in and improves(new_value, value):
                q_in, value = candidate, new_value
            history.append(value)
        yield ProgressEvent("align", round_ / max_iter, f"{label}round {round_}: J = {value:.6g}")
        # With one side fixed a second round solves the same LAP again: nothing can change
        # (unless the output side also sits on another axis, whose mapping just moved).
        if ((out_fixed or in_fixed) and not problem.coupled) or not improves(value, start):
            break
    return q_out, q_in, history


def align_layer_pair(*args, **kwargs) -> LayerAlignment:
    """:func:`align_layer_pair_job` run to its end (no progress, no cancel)."""
    return run_job(align_layer_pair_job(*args, **kwargs))


def align_layer_pair_job(
    w_base: torch.Tensor,
    b_base: torch.Tensor | None,
    w_target: torch.Tensor,
    b_target: torch.Tensor | None,
    *,
    in_fixed: bool,
    out_fixed: bool,
    in_block: Layout = 1,
    out_layout: Layout = 1,
    riders: Sequence[Rider] = (),
    max_iter: int = 50,
    init: str | Match = "identity",
    restarts: int = 0,
    seed: int = 0,
    profile_starts: bool = True,
    name: str = "",
    out_reason: str = "class outputs",
    in_reason: str = "network inputs",
    cancel: CancelToken | None = None,
) -> Job[LayerAlignment]:
    """Job: align one target layer to one base layer on both sides by alternating rectangular
    LAPs. Yields one ProgressEvent("align") per round of each run ("run 2/4 (random): round 3:
    J = ..."); ``cancel`` is checked before each LAP.

    Parameters:
        w_base, w_target: weights (out, in) or conv kernels (out, in, kh, kw); a weight stored
            (in, out) (GPT-2's Conv1D) is passed transposed.
        b_base, b_target: biases (out,) or None (a missing bias counts as zero).
        in_fixed / out_fixed: that side must keep the identity (network inputs, class outputs);
            it then needs equal sizes on both models.
        in_block: entries per input unit (H*W for a linear layer after flatten), or
            (block, tiles) for an input axis holding several copies of the units' layout.
        out_layout: the same for the output axis (and the bias): (head dims, 3) for a fused
            QKV projection, (1, 4) for an LSTM's gate-stacked rows.
        riders: further tensors that move with the layer's units (an LSTM's hidden weight and
            biases, its reverse direction); they enter the objective and the costs.
        max_iter: at most this many (out, in) rounds.
        init: "identity" (truncated identity for Q_in, the naive start), "random", or a
            :class:`Match` to start Q_in from (e.g. the previous layer's output match).
        restarts: extra runs from random Q_in; the run with the highest J is kept.
        profile_starts: with both sides free, also run from the value-profile matches of
            the rows (Q_out) and of the columns (Q_in); with the input side fixed and the output
            units on two axes of a rider, from the rows' profiles.
        seed: seeds the random starts.
        name: layer name used as a prefix in error messages.
        out_reason / in_reason: what a fixed side is, for error messages.
    Returns:
        A :class:`LayerAlignment`.
    Raises:
        AlignmentError: kernels of different spatial size, a linear vs a conv layer, a fixed side
        whose sizes differ, an axis that is not a multiple of its layout, or NaN weights.
    """
    prefix = f"{name}: " if name else ""
    pairs = [Rider(w_base, w_target, (("out", out_layout), ("in", in_block))
                   + (None,) * max(0, w_base.ndim - 2))]
    if b_base is not None and b_target is not None:
        pairs.append(Rider(b_base, b_target, (("out", out_layout),)))
    pairs += list(riders)
    _check_shapes(pairs, prefix)
    case = shape_case(tuple(w_base.shape), tuple(w_target.shape), in_block, out_layout)
    _check_fixed_sides(case, out_fixed, in_fixed, out_reason, in_reason, prefix)
    if not all(torch.isfinite(t).all() for p in pairs for t in (p.base, p.target)):
        raise AlignmentError(f"{prefix}weights contain NaN or inf")

    problem = _Problem(pairs)
    gen = torch.Generator().manual_seed(seed)
    identity_out = Match.identity(case.out_base, case.out_target)
    starts = [(identity_out, q_in, kind)
              for q_in, kind in _input_starts(case, in_fixed, init, restarts, gen, prefix)]
    cancel = cancel or never_cancelled()
    if profile_starts and not out_fixed and (not in_fixed or problem.coupled):
        starts += yield from _profile_starts(problem, case, in_fixed, cancel)
    q_out, q_in, history, start = yield from _best_run(problem, starts, out_fixed, in_fixed,
                                                       max_iter, cancel)
    return LayerAlignment(
        out=q_out,
        inp=q_in,
        objective_history=tuple(history),
        costs=_matched_out_costs(problem, q_out, q_in),
        case=case,
        start=start,
        runs=len(starts),
    )


def _check_fixed_sides(case: ShapeCase, out_fixed: bool, in_fixed: bool, out_reason: str,
                       in_reason: str, prefix: str) -> None:
    """A fixed side (class outputs, network inputs) keeps the identity: its sizes must agree."""
    if out_fixed and case.out_base != case.out_target:
        raise AlignmentError(
            f"{prefix}{out_reason} differ: base {case.out_base}, target {case.out_target}")
    if in_fixed and case.in_base != case.in_target:
        raise AlignmentError(
            f"{prefix}{in_reason} differ: base {case.in_base}, target {case.in_target}")


def _input_starts(case: ShapeCase, in_fixed: bool, init: str | Match, restarts: int,
                  gen: torch.Generator, prefix: str) -> list[tuple[Match, str]]:
    """The input-side matches to start the alternation from, with their kind: ``init``, then
    ``restarts`` random ones (only the identity when the input side is fixed)."""
    if in_fixed:
        return [(Match.identity(case.in_base, case.in_target), "identity")]
    starts: list[tuple[Match, str]] = []
    if isinstance(init, Match):
        if (init.base_size, init.target_size) != (case.in_base, case.in_target):
            raise AlignmentError(
                f"{prefix}initial input match {init.base_size} <- {init.target_size} does "
                f"not fit the layers ({case.in_base} <- {case.in_target})")
        starts.append((init, "given"))
    elif init == "identity":
        starts.append((Match.identity(case.in_base, case.in_target), "identity"))
    elif init == "random":
        starts.append((Match.random(case.in_base, case.in_target, gen), "random"))
    else:
        raise AlignmentError(f"{prefix}unknown init {init!r}; use 'identity' or 'random'")
    starts += [(Match.random(case.in_base, case.in_target, gen), "random")
               for _ in range(max(0, restarts))]
    return starts


# Quantiles per unit in a value profile: enough to tell units apart, few enough that the
# profile of a 4096-wide layer is small.
PROFILE_POINTS = 33


def value_profile(units: torch.Tensor, points: int = PROFILE_POINTS) -> torch.Tensor:
    """Per row of ``units`` (units x values), ``points`` evenly spaced quantiles of its values
    (linear interpolation between order statistics): a summary of the row that does not change
    when its values are permuted, and changes little when a few are added or removed."""
    ordered = units.sort(dim=1).values
    n = ordered.shape[1]
    pos = torch.linspace(0, n - 1, points, dtype=ordered.dtype, device=ordered.device)
    low = pos.floor().long().clamp(max=n - 1)
    high = (low + 1).clamp(max=n - 1)
    frac = (pos - low.to(pos.dtype))[None, :]
    return ordered[:, low] * (1 - frac) + ordered[:, high] * frac


def _profile_match(pb: torch.Tensor, pt: torch.Tensor, base_extra: torch.Tensor | None = None,
                   target_extra: torch.Tensor | None = None) -> Match:
    """The match maximising minus the squared distance between value profiles ``pb``, ``pt``
    (units x quantiles) plus, per unit, the squared distance of values no permutation moves
    (its bias entries)."""
    distance = torch.cdist(pb, pt) ** 2
    if base_extra is not None and target_extra is not None:
        distance = distance + torch.cdist(base_extra, target_extra) ** 2
    rows, cols = solve_lap(-distance)
    return Match.from_lap(rows, cols, pb.shape[0], pt.shape[0])


def _profile_starts(problem: _Problem, case: ShapeCase, in_fixed: bool,
                    cancel: CancelToken) -> Job[list[tuple[Match, Match, str]]]:
    """Starts (q_out, q_in, kind) from value profiles: the rows' profiles give Q_out (Q_in
    then solved against it, unless fixed), the columns' profiles give Q_in.

    A job: at LLM widths sorting the profiles and their LAPs take most of a minute before the
    first round, so each part says what it does and Cancel is checked before it."""
    if min(case.out_base, case.out_target, case.in_base, case.in_target) == 0:
        return []
    yield ProgressEvent("align", 0.0, f"value-profile starts: matching {case.out_base} x "
                                      f"{case.out_target} output units by their sorted values")
    cancel.raise_if_cancelled()
    (pb, eb), (pt, et) = problem.profiles("out", 0), problem.profiles("out", 1)
    q_out = _profile_match(pb, pt, eb, et)
    identity_in = Match.identity(case.in_base, case.in_target)
    if in_fixed:
        return [(q_out, identity_in, "out profile")]
    yield ProgressEvent("align", 0.0, f"value-profile starts: matching {case.in_base} x "
                                      f"{case.in_target} input units")
    cancel.raise_if_cancelled()
    rows, cols = solve_lap(problem.in_cost(q_out, identity_in))
    q_in = Match.from_lap(rows, cols, case.in_base, case.in_target)
    cancel.raise_if_cancelled()
    q_in_cols = _profile_match(problem.profiles("in", 0)[0], problem.profiles("in", 1)[0])
    return [(q_out, q_in, "out profile"),
            (Match.identity(case.out_base, case.out_target), q_in_cols, "in profile")]


def _best_run(problem: _Problem, starts: list[tuple[Match, Match, str]], out_fixed: bool,
              in_fixed: bool, max_iter: int, cancel: CancelToken
              ) -> Job[tuple[Match, Match, list[float], str]]:
    """Alternate from every start; keep the run with the highest final J (the first on ties)."""
    best: tuple[Match, Match, list[float], str] | None = None
    n = len(starts)
    for k, (q_out0, q_in0, kind) in enumerate(starts):
        label = f"run {k + 1}/{n} ({kind}): " if n > 1 else ""
        result = yield from sub_job(_run(problem, q_out0, q_in0, out_fixed, in_fixed, max_iter,
                                         cancel, label), k / n, (k + 1) / n)
        if best is None or improves(result[2][-1], best[2][-1]):
            best = (*result, kind)
    assert best is not None
    return best


def _matched_out_costs(problem: _Problem, q_out: Match, q_in: Match) -> tuple[float, ...]:
    """The final output-side cost at the matched (slot, unit) pairs, in slot order."""
    final_cost = problem.out_cost(q_out, q_in)
    costs = final_cost[q_out.rows_tensor(final_cost.device), q_out.cols_tensor(final_cost.device)]
    return tuple(float(c) for c in costs.cpu().tolist())


def aligned_layer(alignment: LayerAlignment, w_target: torch.Tensor, b_target: torch.Tensor | None,
                  in_block: Layout = 1, out_layout: Layout = 1,
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Apply a :class:`LayerAlignment` to the target layer: (T(W), T(b) or None, weight mask).

    The mask is True on weight entries whose output and input units were both matched.
    """
    w, mask = transform_tensor(w_target, {0: (alignment.out, out_layout),
                                          1: (alignment.inp, in_block)})
    b = (transform_tensor(b_target, {0: (alignment.out, out_layout)})[0]
         if b_target is not None else None)
    return w, b, mask


__all__ = ["LayerAlignment", "Rider", "align_layer_pair", "aligned_layer"]
