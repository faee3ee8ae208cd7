"""Local two-sided alignment of one layer pair (mal_method.md sec. 4, 9): all nine width cases."""

from __future__ import annotations

import itertools

import pytest
import torch

from mal_desktop.core.align.generalized import Match, transform_tensor
from mal_desktop.core.align.local import align_layer_pair, aligned_layer
from mal_desktop.core.errors import AlignmentError
from planted import planted_sources

# (base, target) unit counts per side and case ("wider" = the base is wider)
OUT = {"wider": (64, 48), "equal": (48, 48), "narrower": (40, 56)}
IN = {"wider": (60, 44), "equal": (50, 50), "narrower": (40, 54)}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _expected(source: list[int], m: int, n: int) -> Match:
    """The planted match: base slot source[j] <- target unit j for every copied unit j."""
    pairs = [(s, j) for j, s in enumerate(source) if s >= 0]
    return Match.from_lap([s for s, _ in pairs], [j for _, j in pairs], m, n)


def _planted_pair(out_case: str, in_case: str, seed: int):
    """A base layer and a target built from it: out units permuted / subset / with extras; in
    units kept in place (the truncated identity is right) with missing or extra inputs."""
    gen = _gen(seed)
    (mo, no), (mi, ni) = OUT[out_case], IN[in_case]
    wb = torch.randn(mo, mi, generator=gen, dtype=torch.float64)
    bb = torch.randn(mo, generator=gen, dtype=torch.float64)
    src = planted_sources(mo, no, gen)
    k_in = min(mi, ni)
    wt = torch.randn(no, ni, generator=gen, dtype=torch.float64)
    bt = torch.randn(no, generator=gen, dtype=torch.float64)
    for j, s in enumerate(src):
        if s >= 0:
            wt[j, :k_in] = wb[s, :k_in]
            bt[j] = bb[s]
    return wb, bb, wt, bt, src


@pytest.mark.parametrize("out_case", list(OUT))
@pytest.mark.parametrize("in_case", list(IN))
def test_nine_width_cases_recover_planted_alignment(out_case: str, in_case: str) -> None:
    wb, bb, wt, bt, src = _planted_pair(out_case, in_case, seed=11)
    (mo, no), (mi, ni) = OUT[out_case], IN[in_case]
    result = align_layer_pair(wb, bb, wt, bt, in_fixed=False, out_fixed=False)

    assert (result.case.out, result.case.inp) == (out_case, in_case)
    assert (result.out.matched, result.out.padded, result.out.dropped) == (
        min(mo, no), mo - min(mo, no), no - min(mo, no))
    assert (result.inp.matched, result.inp.padded, result.inp.dropped) == (
        min(mi, ni), mi - min(mi, ni), ni - min(mi, ni))
    assert result.out.case == out_case and result.inp.case == in_case
    assert len(result.costs) == min(mo, no)

    # the planted answer: base slot src[j] <- target unit j; inputs at the truncated identity
    expected_out = _expected(src, mo, no)
    assert result.out == expected_out
    assert result.inp == Match.identity(mi, ni)
    assert set(result.out.dropped_units()) == {j for j, s in enumerate(src) if s < 0}

    w, b, mask = aligned_layer(result, wt, bt)
    assert w.shape == wb.shape and b is not None and b.shape == bb.shape
    expected_mask = result.out.matched_mask()[:, None] & result.inp.matched_mask()[None, :]
    assert torch.equal(mask, expected_mask)
    assert torch.equal(w[mask], wb[mask])  # the aligned target equals the base where matched
    assert (w[~mask] == 0).all()
    assert torch.equal(b[result.out.matched_mask()], bb[result.out.matched_mask()])
    assert result.objective >= result.initial_objective
    assert all(a <= b_ for a, b_ in zip(result.objective_history, result.objective_history[1:]))


@pytest.mark.parametrize("in_case", list(IN))
def test_input_side_recovered_when_output_fixed(in_case: str) -> None:
    gen = _gen(5)
    mi, ni = IN[in_case]
    wb = torch.randn(30, mi, generator=gen, dtype=torch.float64)
    src = planted_sources(mi, ni, gen)
    wt = torch.randn(30, ni, generator=gen, dtype=torch.float64)
    for j, s in enumerate(src):
        if s >= 0:
            wt[:, j] = wb[:, s]
    result = align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=True)
    assert result.out == Match.identity(30, 30)
    assert result.inp == _expected(src, mi, ni)
    w, _, mask = aligned_layer(result, wt, None)
    assert torch.equal(w[mask], wb[mask])


@pytest.mark.parametrize("seed", range(12))
def test_objective_never_decreases(seed: int) -> None:
    gen = _gen(100 + seed)
    sizes = torch.randint(3, 25, (4,), generator=gen).tolist()
    conv = seed % 3 == 0
    kernel = (3, 3) if conv else ()
    wb = torch.randn(sizes[0], sizes[1], *kernel, generator=gen)
    wt = torch.randn(sizes[2], sizes[3], *kernel, generator=gen)
    bias = seed % 2 == 0
    bb = torch.randn(sizes[0], generator=gen) if bias else None
    bt = torch.randn(sizes[2], generator=gen) if bias else None
    result = align_layer_pair(wb, bb, wt, bt, in_fixed=False, out_fixed=False, restarts=1,
                              seed=seed)
    hist = result.objective_history
    assert len(hist) >= 3  # start, then at least one out and one in half-iteration
    assert all(b >= a for a, b in itertools.pairwise(hist))
    # the reported J is the J of the returned matches
    mapped, _ = transform_tensor(wt.double(), {0: (result.out, 1), 1: (result.inp, 1)})
    j = float((wb.double() * mapped).sum())
    if bias:
        j += float((bb.double() * transform_tensor(bt.double(), {0: (result.out, 1)})[0]).sum())
    assert j == pytest.approx(result.objective, rel=1e-9, abs=1e-9)


def test_restarts_keep_the_best_and_init_options() -> None:
    gen = _gen(3)
    wb, wt = torch.randn(9, 7, generator=gen), torch.randn(8, 10, generator=gen)
    plain = align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=False)
    more = align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=False, restarts=4)
    assert more.objective >= plain.objective
    start = Match.random(7, 10, _gen(1))
    from_match = align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=False, init=start)
    assert from_match.objective >= from_match.initial_objective
    with pytest.raises(AlignmentError, match="does not fit"):
        align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=False,
                         init=Match.identity(3, 3))
    with pytest.raises(AlignmentError, match="unknown init"):
        align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=False, init="magic")


def test_every_round_reports_and_cancel_stops_between_laps() -> None:
    """At LLM widths a round takes about a minute: each one is reported with its run, and
    cancel is seen before the next LAP, not at the end of the layer."""
    from mal_desktop.core.align.local import align_layer_pair_job
    from mal_desktop.core.progress import CancelToken, Cancelled, run_job

    gen = _gen(4)
    wb, wt = torch.randn(12, 9, generator=gen), torch.randn(12, 9, generator=gen)
    events = []
    result = run_job(align_layer_pair_job(wb, None, wt, None, in_fixed=False, out_fixed=False,
                                          restarts=1), events.append)
    # the value-profile starts (most of a minute at hidden 4096 x MLP 11008) say so first
    assert [e.message for e in events[:2]] == [
        "value-profile starts: matching 12 x 12 output units by their sorted values",
        "value-profile starts: matching 9 x 9 input units"]
    rounds = events[2:]
    runs = {e.message.split(":")[0] for e in rounds}
    assert runs == {f"run {k}/{result.runs} ({kind})" for k, kind in
                    enumerate(["identity", "random", "out profile", "in profile"], 1)}
    assert all(" round " in e.message and "J = " in e.message for e in rounds)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and 0 < fractions[-1] <= 1
    for rounds_before_cancel in (0, 1):  # during the profile starts, after the first round
        cancel = CancelToken()
        job = align_layer_pair_job(wb, None, wt, None, in_fixed=False, out_fixed=False,
                                   restarts=1, cancel=cancel)
        seen = [next(job) for _ in range(1 + 2 * rounds_before_cancel)]
        assert (" round " in seen[-1].message) == bool(rounds_before_cancel)
        cancel.cancel()
        with pytest.raises(Cancelled):
            next(job)


@pytest.mark.parametrize("base_out,target_out", [(16, 16), (16, 20), (20, 14)])
def test_conv_first_layer_recovers_channels(base_out: int, target_out: int) -> None:
    gen = _gen(21)
    wb = torch.randn(base_out, 3, 3, 3, generator=gen)
    src = planted_sources(base_out, target_out, gen)
    wt = torch.randn(target_out, 3, 3, 3, generator=gen)
    for j, s in enumerate(src):
        if s >= 0:
            wt[j] = wb[s]
    result = align_layer_pair(wb, None, wt, None, in_fixed=True, out_fixed=False)
    assert result.inp == Match.identity(3, 3)
    assert result.out == _expected(src, base_out, target_out)
    w, _, mask = aligned_layer(result, wt, None)
    assert w.shape == wb.shape
    assert torch.equal(w[mask], wb[mask])
    assert len(result.objective_history) == 2  # start + one out solve: nothing else can move


def test_conv_two_sided_reads_kernels_as_matrices() -> None:
    gen = _gen(8)
    wb = torch.randn(24, 20, 3, 3, generator=gen, dtype=torch.float64)
    src = planted_sources(24, 18, gen)
    wt = torch.randn(18, 26, 3, 3, generator=gen, dtype=torch.float64)
    for j, s in enumerate(src):
        wt[j, :20] = wb[s]
    result = align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=False)
    assert result.case.text == ("out: base wider 24 <- 18 (zero-pad 6); "
                                "in: base narrower 20 <- 26 (drop 6)")
    assert result.inp == Match.identity(20, 26)
    w, _, mask = aligned_layer(result, wt, None)
    assert w.shape == wb.shape and torch.equal(w[mask], wb[mask])


def test_linear_after_flatten_uses_blocks() -> None:
    gen = _gen(9)
    hw = 4  # 2x2 feature map per channel
    wb = torch.randn(10, 6 * hw, generator=gen, dtype=torch.float64)
    src = planted_sources(6, 5, gen)  # target reads 5 of the base's 6 channels, shuffled
    wt = torch.empty(10, 5 * hw, dtype=torch.float64)
    for j, s in enumerate(src):
        wt[:, j * hw:(j + 1) * hw] = wb[:, s * hw:(s + 1) * hw]
    result = align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=True, in_block=hw)
    assert result.inp == Match.from_lap(src, list(range(5)), 6, 5)
    w, _, mask = aligned_layer(result, wt, None, in_block=hw)
    assert w.shape == wb.shape and torch.equal(w[mask], wb[mask])
    assert (~mask).sum() == 10 * hw  # one padded channel = one block of zeros per row


def test_readable_errors() -> None:
    with pytest.raises(AlignmentError, match="kernel 3x3 vs 5x5 cannot merge"):
        align_layer_pair(torch.zeros(4, 2, 3, 3), None, torch.zeros(4, 2, 5, 5), None,
                         in_fixed=False, out_fixed=False)
    with pytest.raises(AlignmentError, match="head: class outputs differ: base 10, target 5"):
        align_layer_pair(torch.zeros(10, 8), None, torch.zeros(5, 8), None,
                         in_fixed=False, out_fixed=True, name="head")
    with pytest.raises(AlignmentError, match="network inputs differ: base 8, target 6"):
        align_layer_pair(torch.zeros(4, 8), None, torch.zeros(4, 6), None,
                         in_fixed=True, out_fixed=False)
    with pytest.raises(AlignmentError, match="conv2d base layer with a linear"):
        align_layer_pair(torch.zeros(4, 2, 3, 3), None, torch.zeros(4, 2), None,
                         in_fixed=False, out_fixed=False)
    with pytest.raises(AlignmentError, match="multiple of the block 4"):
        align_layer_pair(torch.zeros(4, 8), None, torch.zeros(4, 10), None,
                         in_fixed=False, out_fixed=False, in_block=4)
    with pytest.raises(AlignmentError, match="NaN"):
        align_layer_pair(torch.full((3, 3), float("nan")), None, torch.zeros(3, 3), None,
                         in_fixed=False, out_fixed=False)


@pytest.mark.parametrize("kind", ["conv", "flatten"])
def test_both_sides_permuted_recovered_from_value_profiles(kind: str) -> None:
    """Conv kernels (out narrower, in wider) and a linear layer after flatten (4 features per
    input channel), both sides permuted: the value-profile starts find the planted map."""
    gen = _gen(0)
    if kind == "conv":
        wb = torch.randn(24, 20, 3, 3, generator=gen)
        pos = torch.randperm(30, generator=gen)[:24]  # base out unit i sits at target unit pos[i]
        src = torch.randperm(20, generator=gen)[:16]  # target in unit j copies base in src[j]
        wt = torch.randn(30, 16, 3, 3, generator=gen)
        wt[pos] = wb[:, src]
        block = 1
    else:
        block = 4
        wb = torch.randn(30, 12 * block, generator=gen)
        pos = torch.argsort(torch.randperm(30, generator=gen))
        src = torch.randperm(12, generator=gen)
        wt = torch.empty(30, 12 * block)
        wt[pos] = wb[:, (src[:, None] * block + torch.arange(block)).reshape(-1)]
    wt = wt + 0.05 * torch.randn(wt.shape, generator=gen)
    result = align_layer_pair(wb, None, wt, None, in_fixed=False, out_fixed=False,
                              in_block=block)
    assert result.start in ("out profile", "in profile")
    assert result.out == Match.from_lap(range(len(pos)), pos, wb.shape[0], wt.shape[0])
    assert result.inp == Match.from_lap(src, range(len(src)), result.case.in_base,
                                        result.case.in_target)
