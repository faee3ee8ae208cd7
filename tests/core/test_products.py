"""Cost products of coordinate descent (align/products.py): updated in place = rebuilt."""

from __future__ import annotations

import pytest
import torch

from mal_desktop.core.align import products
from mal_desktop.core.align.generalized import Match
from mal_desktop.core.align.products import CostProducts, PairedTensor

CPU = torch.device("cpu")


def _moved(match: Match, gen: torch.Generator, swaps: int) -> Match:
    """``match`` with a few base slots swapped (a padded slot swapped in empties another)."""
    src = list(match.source_index())
    for _ in range(swaps):
        i, j = torch.randint(len(src), (2,), generator=gen).tolist()
        src[i], src[j] = src[j], src[i]
    rows = [r for r, c in enumerate(src) if c >= 0]
    return Match.from_lap(rows, [src[r] for r in rows], match.base_size, match.target_size)


@pytest.mark.parametrize("m, n", [(40, 40), (40, 32), (32, 40)])
@pytest.mark.parametrize("layout", [1, 3, (2, 2)])
def test_updated_costs_equal_rebuilt_costs(m, n, layout, monkeypatch):
    """A group whose one dependency moved a few units is updated from the changed slots only;
    its cost equals a rebuild from scratch: square and rectangular matches (padded and dropped
    units), blocks and tiled layouts, on the out axis and the in axis of a tensor."""
    gen = torch.Generator().manual_seed(0)
    per_unit = layout if isinstance(layout, int) else layout[0] * layout[1]

    def pair(key: str, base: tuple[int, ...], target: tuple[int, ...], axes) -> PairedTensor:
        return PairedTensor(key, torch.randn(base, generator=gen, dtype=torch.float64),
                            torch.randn(target, generator=gen, dtype=torch.float64), axes)

    work = [pair("w1", (m, 20), (n, 20), (("t", 1), ("s", 1))),
            pair("w2", (m * per_unit, 20, 3), (n * per_unit, 20, 3),
                 (("t", layout), ("s", 1), (None, 1)))]
    matches = {"s": Match.random(20, 20, gen), "t": Match.random(m, n, gen)}
    monkeypatch.setattr(products, "MAX_UPDATED_FRACTION", 1.0)
    kept = CostProducts(work, ["s", "t"])
    updates = {"count": 0}
    real = CostProducts._update

    def counting(self, *args):
        done = real(self, *args)
        updates["count"] += done
        return done

    monkeypatch.setattr(CostProducts, "_update", counting)
    for step in range(4):
        for space in ("s", "t"):
            updated = kept.cost(space, matches, torch.float64, CPU)
            rebuilt = CostProducts(work, ["s", "t"]).cost(space, matches, torch.float64, CPU)
            assert torch.allclose(updated, rebuilt, rtol=0, atol=1e-10), (step, space)
        matches["t"] = _moved(matches["t"], gen, 3)
        matches["s"] = _moved(matches["s"], gen, 2)
    assert updates["count"] == 6  # both spaces, after the first build


@pytest.mark.parametrize("m, n", [(40, 40), (40, 32), (32, 40)])
@pytest.mark.parametrize("layout", [1, 3, (2, 2)])
def test_objective_after_a_move_equals_the_whole_sum(m, n, layout):
    """J after moving a few units of one space, from the changed entries only, equals J
    summed over every entry; a tensor with the space on two axes is summed whole."""
    gen = torch.Generator().manual_seed(1)
    per_unit = layout if isinstance(layout, int) else layout[0] * layout[1]

    def pair(key: str, base: tuple[int, ...], target: tuple[int, ...], axes) -> PairedTensor:
        return PairedTensor(key, torch.randn(base, generator=gen),
                            torch.randn(target, generator=gen), axes)

    work = [pair("w1", (m, 20), (n, 20), (("t", 1), ("s", 1))),
            pair("w2", (20, m * per_unit, 3), (20, n * per_unit, 3),
                 (("s", 1), ("t", layout), (None, 1))),
            pair("sq", (m, m), (n, n), (("t", 1), ("t", 1)))]
    matches = {"s": Match.random(20, 20, gen), "t": Match.random(m, n, gen)}
    kept = CostProducts(work, ["s", "t"])
    for swaps in (1, 3, 40):
        candidate = _moved(matches["t"], gen, swaps)
        got = kept.objective_moved(work, matches, "t", candidate)
        whole = sum(float((p.base.double() * CostProducts(work, []).mapped(
            p, {**matches, "t": candidate}).double()).sum()) for p in work)
        assert got == pytest.approx(whole, rel=1e-12, abs=1e-12)
        matches["t"] = candidate


def test_repeated_axes_cost_and_objective_as_the_reference() -> None:
    """A repeated axis (grouped-query attention: Q's rows and O's columns hold each key/value
    head's dims once per query head of its group) gives the same LAP costs and J in descent as
    generalized.axis_cost / transform_tensor, on the repeated axis and on the other axis."""
    from mal_desktop.core.align.descent import _device_pairs
    from mal_desktop.core.align.generalized import axis_cost, transform_tensor

    gen = torch.Generator().manual_seed(3)
    heads, span, repeat = 2, 4, 2
    layout = (1, 1, repeat, span)  # 8 units, 16 rows
    base = torch.randn(heads * span * repeat, 6, generator=gen, dtype=torch.float64)
    target = torch.randn(heads * span * repeat, 6, generator=gen, dtype=torch.float64)
    info = (("h", layout), ("s", 1))
    work = _device_pairs({"w": base}, {"w": target}, [("w", "w", info)], CPU, torch.float64)
    matches = {"h": Match.random(8, 8, gen), "s": Match.random(6, 6, gen)}
    costs = CostProducts(work, ["h", "s"])
    for space, dim, other in (("h", 0, 1), ("s", 1, 0)):
        other_space = info[other][0]
        mapped, _ = transform_tensor(target, {other: (matches[other_space], info[other][1])})
        want = axis_cost(base, mapped, dim, info[dim][1])
        got = costs.cost(space, matches, torch.float64, CPU)
        assert torch.allclose(got, want, rtol=0, atol=1e-10), space
    whole, _ = transform_tensor(target, {0: (matches["h"], layout), 1: (matches["s"], 1)})
    assert costs.objective(work, matches) == pytest.approx(float((base * whole).sum()), abs=1e-9)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0)])
def test_cost_is_the_group_sum_in_order_and_keeps_kept_products(order):
    """A space's cost adds its groups in their order, bit for bit as copying the first and
    adding the others would, whichever of them are kept (a fixed group, a dependent one) or
    built for the call (too few entries per unit to keep); the kept products themselves do not change."""
    gen = torch.Generator().manual_seed(2)
    tensors = [
        PairedTensor("fixed", torch.randn(30, 24, generator=gen),
                     torch.randn(30, 24, generator=gen), (("s", 1), (None, 1))),
        PairedTensor("dep", torch.randn(30, 20, generator=gen),
                     torch.randn(30, 20, generator=gen), (("s", 1), ("t", 1))),
        PairedTensor("small", torch.randn(30, 3, generator=gen),
                     torch.randn(30, 3, generator=gen), (("s", 1), ("u", 1))),  # too few to keep
    ]
    work = [tensors[i] for i in order]
    matches = {"s": Match.random(30, 30, gen), "t": Match.random(20, 20, gen),
               "u": Match.random(3, 3, gen)}
    costs = CostProducts(work, ["s", "t", "u"])
    for step in range(3):
        got = costs.cost("s", matches, torch.float32, CPU)
        groups = costs._groups["s"]
        assert sorted(g.reuse for g in groups) == [False, True, True]
        kept = [g.value.clone() for g in groups if g.reuse]
        values = [costs._group_value(g, matches) for g in groups]  # kept: cached; small: again
        want = values[0].clone()
        for value in values[1:]:
            want.add_(value)
        assert torch.equal(got, want), step
        assert all(torch.equal(k, g.value) for k, g in zip(kept, [g for g in groups if g.reuse]))
        matches["t"] = _moved(matches["t"], gen, 12)


def test_changed_slots_as_a_plain_loop():
    gen = torch.Generator().manual_seed(6)
    for m in (0, 1, 7, 64):
        old = torch.randint(-1, 5, (m,), generator=gen).tolist()
        new = torch.randint(-1, 5, (m,), generator=gen).tolist()
        plain = [j for j, (a, b) in enumerate(zip(old, new)) if a != b]
        assert products._changed_slots(tuple(old), tuple(new)) == plain
