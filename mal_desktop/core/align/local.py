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

from dataclasses import dataclass

import torch

from ..device import compute_device
from ..errors import AlignmentError
from .generalized import (
    Match,
    ShapeCase,
    axis_cost,
    kernel_text,
    shape_case,
    transform_tensor,
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


class _Problem:
    """The tensors of one layer pair on the compute device, and the objective."""

    def __init__(self, w_base: torch.Tensor, b_base: torch.Tensor | None, w_target: torch.Tensor,
                 b_target: torch.Tensor | None, in_block: int) -> None:
        device = compute_device()
        dtype = _work_dtype(device)
        self.wb = w_base.detach().to(device, dtype)
        self.wt = w_target.detach().to(device, dtype)
        # A missing bias on either side contributes nothing to J (it is zero there).
        use_bias = b_base is not None and b_target is not None
        self.bb = b_base.detach().to(device, dtype) if use_bias else None
        self.bt = b_target.detach().to(device, dtype) if use_bias else None
        self.block = in_block

    def objective(self, q_out: Match, q_in: Match) -> float:
        mapped, _ = transform_tensor(self.wt, {0: (q_out, 1), 1: (q_in, self.block)})
        value = float((self.wb * mapped).sum().item())
        if self.bb is not None:
            mapped_b, _ = transform_tensor(self.bt, {0: (q_out, 1)})
            value += float((self.bb * mapped_b).sum().item())
        return value

    def out_cost(self, q_in: Match) -> torch.Tensor:
        mapped, _ = transform_tensor(self.wt, {1: (q_in, self.block)})
        cost = axis_cost(self.wb, mapped, 0)
        if self.bb is not None:
            cost = cost + torch.outer(self.bb, self.bt)
        return cost

    def in_cost(self, q_out: Match) -> torch.Tensor:
        mapped, _ = transform_tensor(self.wt, {0: (q_out, 1)})
        return axis_cost(self.wb, mapped, 1, self.block)


def _check_shapes(w_base: torch.Tensor, b_base: torch.Tensor | None, w_target: torch.Tensor,
                  b_target: torch.Tensor | None, in_block: int, prefix: str) -> None:
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
    if in_block < 1:
        raise AlignmentError(f"{prefix}input block must be >= 1, got {in_block}")
    for what, w, b in (("base", w_base, b_base), ("target", w_target, b_target)):
        if w.shape[1] % in_block:
            raise AlignmentError(f"{prefix}{what} input axis of {w.shape[1]} features is not a "
                                 f"multiple of the block {in_block} (different spatial sizes?)")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise AlignmentError(f"{prefix}{what} bias of shape {tuple(b.shape)} does not fit "
                                 f"{w.shape[0]} outputs")


def _run(problem: _Problem, q_out: Match, q_in: Match, out_fixed: bool, in_fixed: bool,
         max_iter: int) -> tuple[Match, Match, list[float]]:
    """Alternate the two LAPs from (q_out, q_in); returns the final matches and J history."""
    value = problem.objective(q_out, q_in)
    history = [value]

    for _ in range(max_iter):
        start = value
        if not out_fixed:
            cost = problem.out_cost(q_in)
            rows, cols = solve_lap(cost)
            candidate = Match.from_lap(rows, cols, q_out.base_size, q_out.target_size)
            new_value = problem.objective(candidate, q_in)
            if candidate != q_out and improves(new_value, value):
                q_out, value = candidate, new_value
            history.append(value)
        if not in_fixed:
            cost = problem.in_cost(q_out)
            rows, cols = solve_lap(cost)
            candidate = Match.from_lap(rows, cols, q_in.base_size, q_in.target_size)
            new_value = problem.objective(q_out, candidate)
            if candidate != q_in and improves(new_value, value):
                q_in, value = candidate, new_value
            history.append(value)
        # With one side fixed a second round solves the same LAP again: nothing can change.
        if out_fixed or in_fixed or not improves(value, start):
            break
    return q_out, q_in, history


def align_layer_pair(
    w_base: torch.Tensor,
    b_base: torch.Tensor | None,
    w_target: torch.Tensor,
    b_target: torch.Tensor | None,
    *,
    in_fixed: bool,
    out_fixed: bool,
    in_block: int = 1,
    max_iter: int = 50,
    init: str | Match = "identity",
    restarts: int = 0,
    seed: int = 0,
    profile_starts: bool = True,
    name: str = "",
    out_reason: str = "class outputs",
    in_reason: str = "network inputs",
) -> LayerAlignment:
    """Align one target layer to one base layer on both sides by alternating rectangular LAPs.

    Parameters:
        w_base, w_target: weights (out, in) or conv kernels (out, in, kh, kw).
        b_base, b_target: biases (out,) or None (a missing bias counts as zero).
        in_fixed / out_fixed: that side must keep the identity (network inputs, class outputs);
            it then needs equal sizes on both models.
        in_block: entries per input unit (H*W for a linear layer after flatten).
        max_iter: at most this many (out, in) rounds.
        init: "identity" (truncated identity for Q_in, the naive start), "random", or a
            :class:`Match` to start Q_in from (e.g. the previous layer's output match).
        restarts: extra runs from random Q_in; the run with the highest J is kept.
        profile_starts: with both sides free, also run from the value-profile matches of
            the rows (Q_out) and of the columns (Q_in).
        seed: seeds the random starts.
        name: layer name used as a prefix in error messages.
        out_reason / in_reason: what a fixed side is, for error messages.
    Returns:
        A :class:`LayerAlignment`.
    Raises:
        AlignmentError: kernels of different spatial size, a linear vs a conv layer, a fixed side
        whose sizes differ, an input axis that is not a multiple of ``in_block``, or NaN weights.
    """
    prefix = f"{name}: " if name else ""
    _check_shapes(w_base, b_base, w_target, b_target, in_block, prefix)
    case = shape_case(tuple(w_base.shape), tuple(w_target.shape), in_block)
    _check_fixed_sides(case, out_fixed, in_fixed, out_reason, in_reason, prefix)
    if not (torch.isfinite(w_base).all() and torch.isfinite(w_target).all()):
        raise AlignmentError(f"{prefix}weights contain NaN or inf")

    problem = _Problem(w_base, b_base, w_target, b_target, in_block)
    gen = torch.Generator().manual_seed(seed)
    identity_out = Match.identity(case.out_base, case.out_target)
    starts = [(identity_out, q_in, kind)
              for q_in, kind in _input_starts(case, in_fixed, init, restarts, gen, prefix)]
    if profile_starts and not (in_fixed or out_fixed):
        starts += _profile_starts(problem, case)
    q_out, q_in, history, start = _best_run(problem, starts, out_fixed, in_fixed, max_iter)
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


def _profile_match(base_units: torch.Tensor, target_units: torch.Tensor,
                   base_extra: torch.Tensor | None = None,
                   target_extra: torch.Tensor | None = None) -> Match:
    """The match maximising minus the squared distance between value profiles (plus, per unit,
    one extra value such as the bias, which no permutation moves)."""
    pb, pt = value_profile(base_units), value_profile(target_units)
    distance = torch.cdist(pb, pt) ** 2
    if base_extra is not None and target_extra is not None:
        distance = distance + (base_extra[:, None] - target_extra[None, :]) ** 2
    rows, cols = solve_lap(-distance)
    return Match.from_lap(rows, cols, base_units.shape[0], target_units.shape[0])


def _profile_starts(problem: _Problem, case: ShapeCase) -> list[tuple[Match, Match, str]]:
    """Two starts (q_out, q_in, kind) from value profiles: the rows' profiles give Q_out (Q_in
    then solved against it), the columns' profiles give Q_in."""
    if min(case.out_base, case.out_target, case.in_base, case.in_target) == 0:
        return []
    wb, wt = problem.wb, problem.wt
    q_out = _profile_match(wb.reshape(wb.shape[0], -1), wt.reshape(wt.shape[0], -1),
                           problem.bb, problem.bt)
    rows, cols = solve_lap(problem.in_cost(q_out))
    q_in = Match.from_lap(rows, cols, case.in_base, case.in_target)
    block = problem.block
    # an input unit owns its ``block`` columns across every output row and kernel position
    cb = torch.movedim(wb, 1, 0).reshape(case.in_base, -1) if block == 1 else \
        wb.reshape(wb.shape[0], case.in_base, block, -1).transpose(0, 1).reshape(case.in_base, -1)
    ct = torch.movedim(wt, 1, 0).reshape(case.in_target, -1) if block == 1 else \
        wt.reshape(wt.shape[0], case.in_target, block, -1).transpose(0, 1).reshape(
            case.in_target, -1)
    q_in_cols = _profile_match(cb, ct)
    return [(q_out, q_in, "out profile"),
            (Match.identity(case.out_base, case.out_target), q_in_cols, "in profile")]


def _best_run(problem: _Problem, starts: list[tuple[Match, Match, str]], out_fixed: bool,
              in_fixed: bool, max_iter: int) -> tuple[Match, Match, list[float], str]:
    """Alternate from every start; keep the run with the highest final J (the first on ties)."""
    best: tuple[Match, Match, list[float], str] | None = None
    for q_out0, q_in0, kind in starts:
        result = _run(problem, q_out0, q_in0, out_fixed, in_fixed, max_iter)
        if best is None or improves(result[2][-1], best[2][-1]):
            best = (*result, kind)
    assert best is not None
    return best


def _matched_out_costs(problem: _Problem, q_out: Match, q_in: Match) -> tuple[float, ...]:
    """The final output-side cost at the matched (slot, unit) pairs, in slot order."""
    final_cost = problem.out_cost(q_in)
    costs = final_cost[q_out.rows_tensor(final_cost.device), q_out.cols_tensor(final_cost.device)]
    return tuple(float(c) for c in costs.cpu().tolist())


def aligned_layer(alignment: LayerAlignment, w_target: torch.Tensor, b_target: torch.Tensor | None,
                  in_block: int = 1) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Apply a :class:`LayerAlignment` to the target layer: (T(W), T(b) or None, weight mask).

    The mask is True on weight entries whose output and input units were both matched.
    """
    w, mask = transform_tensor(w_target, {0: (alignment.out, 1), 1: (alignment.inp, in_block)})
    b = transform_tensor(b_target, {0: (alignment.out, 1)})[0] if b_target is not None else None
    return w, b, mask


__all__ = ["LayerAlignment", "align_layer_pair", "aligned_layer"]
