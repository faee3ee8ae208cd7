"""Matching attention heads (issue 8): heads move whole, the dims inside a head move per head
(Q with K, V with O), also between models with different numbers of heads of equal size."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mal_desktop.core.align.descent import match_spaces
from mal_desktop.core.align.generalized import Match
from mal_desktop.core.align.heads import HeadFamily, solve_family
from mal_desktop.core.align.matching import apply_matches, default_tensor_keys
from mal_desktop.core.errors import AlignmentError
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.selftest import random_permutations, self_test
from mal_desktop.core.graph.spec import head_permutation_of, permute_state
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.progress import run_job


class Attention(nn.Module):
    """Separate q, k, v, o projections; the heads' width is independent of the stream's."""

    def __init__(self, dim: int = 6, heads: int = 2, head_dim: int = 4) -> None:
        super().__init__()
        self.h, self.d = heads, head_dim
        self.inp = nn.Linear(5, dim)
        self.q, self.k, self.v = (nn.Linear(dim, heads * head_dim) for _ in range(3))
        self.o = nn.Linear(heads * head_dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        x = self.inp(x)
        q, k, v = (p(x).view(b, t, self.h, self.d).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = torch.softmax(q @ k.transpose(-1, -2) / self.d ** 0.5, -1) @ v
        return self.head(x + self.o(y.transpose(1, 2).reshape(b, t, -1))).mean(1)


def model_of(heads: int, head_dim: int = 4, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    return LoadedModel(Attention(heads=heads, head_dim=head_dim).eval(), {"kind": "memory"},
                       (4, 5), 3)


def test_family_solve_is_the_best_head_preserving_match() -> None:
    """Against brute force over every head permutation and per-head dims permutations."""
    heads, dim = 2, 3
    gen = torch.Generator().manual_seed(0)
    costs = [torch.randn(heads * dim, heads * dim, generator=gen, dtype=torch.float64)
             for _ in range(2)]
    family = HeadFamily(("qk", "vo"), heads, heads, dim, ((0,), (1,)), (True, True))
    found = solve_family(costs, family)

    def value(cost: torch.Tensor, match: Match) -> float:
        return float(cost[match.rows_tensor(), match.cols_tensor()].sum())

    inner = list(itertools.permutations(range(dim)))
    best = -float("inf")
    for order in itertools.permutations(range(heads)):
        total = 0.0
        for cost in costs:  # each space its own dims' permutations, one head order for both
            total += sum(max(sum(float(cost[i * dim + r, j * dim + p[r]]) for r in range(dim))
                             for p in inner) for i, j in enumerate(order))
        best = max(best, total)
    assert sum(value(c, m) for c, m in zip(costs, found)) == pytest.approx(best)
    assert all(head_permutation_of(m.permutation(), dim) is not None for m in found)
    # pinned dims: only whole heads in order inside
    pinned = solve_family(costs, HeadFamily(("qk", "vo"), heads, heads, dim, ((0,), (1,)),
                                            (False, True)))
    assert all(c % dim == r % dim for r, c in zip(pinned[0].rows, pinned[0].cols))


def test_separate_projections_are_two_spaces_of_one_attention() -> None:
    model = model_of(2)
    spec = discover_spec(model)
    qk, vo = spec.axes["q.weight"][0].space, spec.axes["v.weight"][0].space
    assert qk == spec.axes["k.weight"][0].space and vo == spec.axes["o.weight"][1].space != qk
    assert spec.head_groups[qk].family == spec.head_groups[vo].family
    assert self_test(model, spec).status == "passed"


@pytest.mark.parametrize("base_heads,target_heads", [(2, 3), (3, 2)])
def test_different_head_counts_match_whole_heads(base_heads: int, target_heads: int) -> None:
    """The target holds the base's heads (permuted, dims permuted inside) plus or minus one
    head: the match finds them, zero-pads or drops whole heads, and maps the attention's
    tensors back onto the base's."""
    narrow, wide = sorted((base_heads, target_heads))
    small = model_of(narrow)
    big = model_of(wide, seed=1)
    spec_small, spec_big = discover_spec(small), discover_spec(big)
    # the wide model's first heads are the narrow model's, then everything is permuted
    state = big.state()
    d = 4
    for key, tensor in small.state().items():
        if tensor.shape == state[key].shape:
            state[key] = tensor.clone()
        elif key == "o.weight":
            state[key][:, :narrow * d] = tensor
        else:
            state[key][:narrow * d] = tensor
    state = permute_state(state, spec_big, random_permutations(spec_big, 4))
    big = big.with_state(state)
    base, target = (small, big) if base_heads == narrow else (big, small)
    b_spec, t_spec = discover_spec(base), discover_spec(target)
    free = {s.id: s.id for s in b_spec.free_spaces()}
    keys = [(k, k) for k in default_tensor_keys(b_spec, base.state())]
    result = run_job(match_spaces(base.state(), b_spec, target.state(), t_spec, free, keys,
                                  restarts=2))
    mapped = apply_matches(target.state(), t_spec, b_spec, keys, result.matches)
    for key in ("q.weight", "k.weight", "v.bias", "o.weight"):
        out, mask = mapped[key]
        assert torch.allclose(out[mask], base.state()[key][mask], atol=1e-6), key
    for space in ("P_heads_q", "P_heads_v"):
        match = result.matches[next(s for s in free if s.startswith(space))]
        assert match.matched == narrow * d
        for i in range(0, match.matched, d):  # whole heads: one target head per base head
            assert len({c // d for c in match.cols[i:i + d]}) == 1


def test_heads_of_different_sizes_are_refused() -> None:
    base, target = model_of(2, head_dim=4), model_of(4, head_dim=2)
    b_spec, t_spec = discover_spec(base), discover_spec(target)
    free = {s.id: s.id for s in b_spec.free_spaces()}
    keys = [(k, k) for k in default_tensor_keys(b_spec, base.state())]
    with pytest.raises(AlignmentError, match="heads of 4 dimension.* and 2 in the target"):
        run_job(match_spaces(base.state(), b_spec, target.state(), t_spec, free, keys))


@pytest.mark.parametrize("permuted", [True, False])
def test_float32_costs_give_the_float64_head_matches(permuted: bool) -> None:
    """Head families are solved on float32 costs (the default) with the matches of float64
    costs: on a permuted copy with dims permuted inside heads, and on an unrelated model."""
    base = model_of(3, seed=5)
    spec = discover_spec(base)
    target = (permute_state(base.state(), spec, random_permutations(spec, 6)) if permuted
              else model_of(3, seed=7).state())
    free = {s.id: s.id for s in spec.free_spaces()}
    keys = [(k, k) for k in default_tensor_keys(spec, base.state())]
    single, double = (run_job(match_spaces(base.state(), spec, target, spec, free, keys,
                                           restarts=3, cost_dtype=dtype))
                      for dtype in (torch.float32, torch.float64))
    assert single.matches == double.matches
    assert single.objective_history == pytest.approx(double.objective_history, rel=1e-12)
    if permuted:
        assert single.objective == pytest.approx(sum(
            float((v.double() ** 2).sum()) for k, v in base.state().items()
            if k in dict(keys)), rel=1e-9)


@pytest.mark.parametrize("layer", ["q", "k", "v", "o"])
def test_local_layer_step_recovers_heads_with_their_dims_moved(layer: str) -> None:
    """A local step (one layer pair, no chain) from a permuted copy whose dims moved inside
    their heads: heads as blocks would compare each head's dims out of order, so the step sees
    the dims one by one first, then settles heads and dims; the layer comes back exactly."""
    from mal_desktop.core.merge.assemble import align_step, merge_step
    from mal_desktop.core.merge.plan import AssemblyStep

    model = model_of(heads=3)
    spec = discover_spec(model)
    state = model.state()
    donor = permute_state(state, spec, random_permutations(spec, 2))
    step = AssemblyStep("t", layer, layer, 1.0, "local")
    alignment = run_job(align_step(step, state, spec, donor, spec))
    assert alignment.align == "local"
    merged = merge_step(step, alignment, state, spec, donor, spec)
    for key in (f"{layer}.weight", f"{layer}.bias"):
        assert torch.allclose(merged[key], state[key], atol=1e-6), key
