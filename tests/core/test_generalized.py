"""Generalized permutations and tensor transforms (mal_method.md sec. 3)."""

from __future__ import annotations

import pytest
import torch

from mal_desktop.core.align.generalized import Match, axis_cost, shape_case, transform_tensor
from mal_desktop.core.errors import AlignmentError

SIZES = {"wider": (7, 4), "equal": (5, 5), "narrower": (3, 6)}  # (base, target)


def _random_match(m: int, n: int, seed: int) -> Match:
    return Match.random(m, n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", list(SIZES))
def test_match_counts_and_matrix(case: str) -> None:
    m, n = SIZES[case]
    match = _random_match(m, n, 3)
    k = min(m, n)
    assert match.case == case
    assert match.matched == k and match.padded == m - k and match.dropped == n - k
    q = match.matrix()
    assert q.shape == (m, n)
    assert q.sum() == k
    assert (q.sum(0) <= 1).all() and (q.sum(1) <= 1).all()
    assert torch.equal(match.matched_mask(), q.sum(1) > 0)
    source = match.source_index()
    assert [s for s in source if s >= 0] == list(match.cols)
    assert set(match.dropped_units()) == set(range(n)) - set(match.cols)


def test_identity_and_constructors() -> None:
    ident = Match.identity(6, 4)
    assert ident.rows == ident.cols == (0, 1, 2, 3) and ident.is_identity
    assert ident.padded == 2 and ident.dropped == 0
    narrow = Match.identity(2, 5)
    assert narrow.rows == (0, 1) and narrow.dropped == 3
    lap = Match.from_lap(torch.tensor([2, 0]), torch.tensor([0, 1]), 4, 2)
    assert lap.rows == (0, 2) and lap.cols == (1, 0) and lap.padded == 2
    assert not lap.is_identity
    perm = Match.from_permutation([2, 0, 1])
    assert torch.equal(perm.permutation(), torch.tensor([2, 0, 1]))
    with pytest.raises(AlignmentError, match="not a permutation"):
        ident.permutation()


@pytest.mark.parametrize("case", list(SIZES))
def test_fast_paths_equal_straightforward_construction(case: str) -> None:
    # from_lap skips the sort when rows arrive in order and source_index returns cols when no
    # slot is padded: both must equal the plain sort-and-scatter.
    m, n = SIZES[case]
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        k = min(m, n)
        rows = torch.randperm(m, generator=gen)[:k]
        cols = torch.randperm(n, generator=gen)[:k]
        pairs = sorted(zip(rows.tolist(), cols.tolist()))
        plain = Match(m, n, tuple(r for r, _ in pairs), tuple(c for _, c in pairs))
        order = torch.argsort(rows)
        for r, c in ((rows, cols), (rows[order], cols[order]), (rows.tolist(), cols.tolist()),
                     (rows.double(), cols.double())):
            got = Match.from_lap(r, c, m, n)
            assert got == plain and all(type(v) is int for v in got.rows + got.cols)
        source = [-1] * m
        for r, c in pairs:
            source[r] = c
        assert plain.source_index() == tuple(source)
    with pytest.raises(AlignmentError, match="ascending"):
        Match.from_lap([1, 1], [0, 1], 2, 2)
    with pytest.raises(AlignmentError, match="distinct"):
        Match.from_lap([0, 1], [0, -1], 2, 2)


@pytest.mark.parametrize("rows,cols", [
    ((0, 1), (0, 1)),  # too few pairs
    ((1, 0, 2), (0, 1, 2)),  # rows not ascending
    ((0, 1, 2), (2, 2, 0)),  # a target unit used twice
    ((0, 1, 5), (0, 1, 2)),  # base slot out of range
    ((0, 1, 2), (0, 1, 9)),  # target unit out of range
])
def test_invalid_matches_rejected(rows: tuple[int, ...], cols: tuple[int, ...]) -> None:
    with pytest.raises(AlignmentError):
        Match(3, 4, rows, cols)


def test_shape_case_texts() -> None:
    case = shape_case((128, 64), (64, 64))
    assert (case.out, case.inp) == ("wider", "equal")
    assert case.text == "out: base wider 128 <- 64 (zero-pad 64); in: equal 64"
    case = shape_case((32, 10, 3, 3), (64, 12, 3, 3))
    assert (case.out, case.inp) == ("narrower", "narrower")
    assert case.text == "out: base narrower 32 <- 64 (drop 32); in: base narrower 10 <- 12 (drop 2)"
    case = shape_case((5, 8 * 4), (5, 6 * 4), in_block=4)
    assert (case.in_base, case.in_target, case.inp) == (8, 6, "wider")
    with pytest.raises(AlignmentError):
        shape_case((5,), (5, 3))


@pytest.mark.parametrize("out_case", list(SIZES))
@pytest.mark.parametrize("in_case", list(SIZES))
def test_transform_equals_dense_product(out_case: str, in_case: str) -> None:
    (mo, no), (mi, ni) = SIZES[out_case], SIZES[in_case]
    q_out, q_in = _random_match(mo, no, 1), _random_match(mi, ni, 2)
    w = torch.randn(no, ni, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out, mask = transform_tensor(w, {0: (q_out, 1), 1: (q_in, 1)}, base_shape=(mo, mi))
    dense = q_out.matrix(torch.float64) @ w @ q_in.matrix(torch.float64).T
    assert out.shape == (mo, mi)
    assert torch.allclose(out, dense)
    expected_mask = q_out.matched_mask()[:, None] & q_in.matched_mask()[None, :]
    assert torch.equal(mask, expected_mask)
    assert (out[~mask] == 0).all()


def test_transform_with_block_linear_after_flatten() -> None:
    # target: linear reading 3 channels x (2x2) = 12 features; base has 4 channels (16 features)
    hw = 4
    w = torch.arange(5 * 3 * hw, dtype=torch.float32).reshape(5, 3 * hw)
    q_in = Match(4, 3, (0, 2, 3), (2, 0, 1))  # base slot 1 is padded
    out, mask = transform_tensor(w, {1: (q_in, hw)})
    assert out.shape == (5, 4 * hw)
    for slot, unit in zip(q_in.rows, q_in.cols):
        assert torch.equal(out[:, slot * hw:(slot + 1) * hw], w[:, unit * hw:(unit + 1) * hw])
        assert mask[:, slot * hw:(slot + 1) * hw].all()
    assert (out[:, hw:2 * hw] == 0).all() and not mask[:, hw:2 * hw].any()


def test_transform_conv_keeps_spatial_axes() -> None:
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(4))
    q_out = Match(4, 6, (0, 1, 2, 3), (5, 0, 2, 1))  # base narrower: drop units 3 and 4
    out, mask = transform_tensor(w, {0: (q_out, 1)}, base_shape=(4, 3, 3, 3))
    assert out.shape == (4, 3, 3, 3) and mask.all()
    assert torch.equal(out[0], w[5]) and torch.equal(out[3], w[1])


def test_transform_errors_name_the_axis() -> None:
    w = torch.zeros(4, 5)
    with pytest.raises(AlignmentError, match="axis 0"):
        transform_tensor(w, {0: (Match.identity(3, 3), 1)})
    with pytest.raises(AlignmentError, match="axis 1 differs"):
        transform_tensor(w, {0: (Match.identity(3, 4), 1)}, base_shape=(3, 6))


def test_axis_cost_matches_explicit_sums() -> None:
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(3, 2 * 4, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 5 * 4, generator=gen, dtype=torch.float64)
    cost = axis_cost(base, target, dim=1, block=4)
    assert cost.shape == (2, 5)
    for i in range(2):
        for j in range(5):
            expected = (base[:, i * 4:(i + 1) * 4] * target[:, j * 4:(j + 1) * 4]).sum()
            assert cost[i, j] == pytest.approx(float(expected))
