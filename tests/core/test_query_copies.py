"""Grouped-query attention: the query heads of a key/value head's group may be reordered among
themselves (the same way on Q's rows and O's columns) without changing the function; weight
matching finds that reorder (align/copies.py) and every mapping of target tensors applies it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mal_desktop.core.align.copies import QueryCopies
from mal_desktop.core.align.descent import match_spaces
from mal_desktop.core.align.generalized import Match
from mal_desktop.core.align.matching import (aligned_target, apply_matches,
                                             default_tensor_keys, whole_model_match)
from mal_desktop.core.errors import AlignmentError
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.selftest import random_copy_orders, random_permutations, self_test
from mal_desktop.core.graph.spec import PermutationSpec, permute_state
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.progress import run_job

sys.path.insert(0, str(Path(__file__).parent))  # tests/core is not a package
import idiom_modules as im  # noqa: E402


def model_of(kv_heads: int = 2, seed: int = 0) -> LoadedModel:
    """``kv_heads`` key/value heads of 4 dims, each read by 4 query heads (SDPA's enable_gqa)."""
    torch.manual_seed(seed)
    module = im.GroupedQueryAttention(heads=4 * kv_heads, kv_heads=kv_heads, head_dim=4, dim=12)
    return LoadedModel(module.eval(), {"kind": "memory"}, (6, 5), 3)


def outputs(model: LoadedModel, state: dict[str, torch.Tensor]) -> torch.Tensor:
    probe = model.with_state(state).module
    with torch.no_grad():
        return probe(model.example_input(8, seed=1))


@pytest.fixture(scope="module")
def gqa() -> tuple[LoadedModel, PermutationSpec]:
    model = model_of()
    return model, discover_spec(model)


def test_query_heads_reordered_in_their_groups_compute_the_same(gqa) -> None:
    model, spec = gqa
    orders = random_copy_orders(spec, seed=2)
    assert set(orders) == {spec.axes["q.weight"][0].space, spec.axes["o.weight"][1].space}
    state = model.state()
    reordered = permute_state(state, spec, {}, orders)
    assert not torch.equal(reordered["q.weight"], state["q.weight"])
    assert torch.allclose(outputs(model, reordered), outputs(model, state), atol=1e-5)
    # the reorder is real: Q's rows reordered without O's columns compute something else
    half = {**state, "q.weight": reordered["q.weight"], "q.bias": reordered["q.bias"]}
    assert not torch.allclose(outputs(model, half), outputs(model, state), atol=1e-3)
    assert self_test(model, spec).status == "passed"  # it plants such reorders too


def test_matches_carrying_copy_orders_map_as_permute_state_does(gqa) -> None:
    """The two ways of applying an alignment (a state permuted by the spec, tensors mapped by
    matches) agree when the query heads are reordered too."""
    model, spec = gqa
    perms, orders = random_permutations(spec, 4), random_copy_orders(spec, 4)
    state = model.state()
    expected = permute_state(state, spec, perms, orders)
    matches = {}
    for space, perm in perms.items():
        match = Match.from_permutation(perm)
        if space in orders:  # one order per head of the permuted space, heads in slot order
            match = match.with_copies(orders[space].tolist())
            assert match.copies
        matches[space] = match
    mapped = apply_matches(state, spec, spec, [(k, k) for k in state], matches)
    assert all(torch.equal(mapped[k][0], expected[k]) for k in state)


def test_whole_model_matching_recovers_reordered_query_heads(gqa) -> None:
    model, spec = gqa
    state = model.state()
    target = permute_state(state, spec, random_permutations(spec, 5), random_copy_orders(spec, 5))
    result = run_job(whole_model_match(state, target, spec))
    realigned = aligned_target(target, spec, result)
    assert all(torch.allclose(realigned[k], v, atol=1e-6) for k, v in state.items())
    history = result.objective_history
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(history, history[1:]))
    # a copy with only its spaces permuted needs no reorder: none is reported
    plain = permute_state(state, spec, random_permutations(spec, 5))
    assert not any(m.copies for m in run_job(whole_model_match(state, plain, spec)).matches.values())


def test_reordering_raises_the_objective_between_independent_models(gqa, monkeypatch) -> None:
    """Two models initialised apart: weight matching with the reorder ends at a higher J than
    with the head and dim permutations alone, and its matches carry the orders it used."""
    model, spec = gqa
    a, b = model.state(), model_of(seed=7).state()
    with_orders = run_job(whole_model_match(a, b, spec))
    monkeypatch.setattr(QueryCopies, "find", staticmethod(lambda *args: []))
    without = run_job(whole_model_match(a, b, spec))
    assert with_orders.objective > without.objective * (1 + 1e-6)
    assert any(m.copies for m in with_orders.matches.values())
    keys = default_tensor_keys(spec, a)
    j = sum(float((a[k].double() * aligned_target(b, spec, with_orders)[k].double()).sum())
            for k in keys)
    assert j == pytest.approx(with_orders.objective, rel=1e-6)  # J is the orders' J


def _without_kv_head(model: LoadedModel, head: int) -> dict[str, torch.Tensor]:
    """The state of ``model`` with key/value head ``head`` and its group's query heads cut."""
    m = model.module
    d, repeat = m.d, m.h // m.g
    keep_kv = torch.tensor([i for i in range(m.g * d) if i // d != head])
    keep_q = torch.tensor([i for i in range(m.h * d) if i // (d * repeat) != head])
    state = model.state()
    out = dict(state)
    for key in ("k.weight", "k.bias", "v.weight", "v.bias"):
        out[key] = state[key][keep_kv]
    out["q.weight"], out["q.bias"] = state["q.weight"][keep_q], state["q.bias"][keep_q]
    out["o.weight"] = state["o.weight"][:, keep_q]
    return out


def test_base_with_more_key_value_heads_receives_the_reordered_ones_in_place() -> None:
    """Base 3 key/value heads, target 2 of them (permuted, query heads reordered): every
    matched entry of the mapped target is the base's own; the third head is zero-padded."""
    base = model_of(kv_heads=3)
    base_spec = discover_spec(base)
    small = model_of(kv_heads=2)
    target_spec = discover_spec(small)
    target = _without_kv_head(base, 1)
    target = permute_state(target, target_spec, random_permutations(target_spec, 6),
                           random_copy_orders(target_spec, 6))
    state = base.state()
    pairs = {s.id: s.id for s in base_spec.free_spaces()}
    result = run_job(match_spaces(state, base_spec, target, target_spec, pairs,
                                  [(k, k) for k in state], restarts=4))
    mapped = apply_matches(target, target_spec, base_spec, [(k, k) for k in state],
                           result.matches)
    for key, (tensor, mask) in mapped.items():
        assert torch.allclose(tensor[mask], state[key][mask], atol=1e-6), key
        assert not bool(tensor[~mask].any()), key
    q_mask = mapped["q.weight"][1]
    assert int((~q_mask.any(1)).sum()) == 4 * 4  # the padded head's 4 query heads of 4 dims


def test_copy_orders_are_checked_and_in_order_means_none() -> None:
    match = Match.from_permutation([1, 0, 3, 2])
    assert match.with_copies([[0, 1], [0, 1]]) == match and match.with_copies([]) == match
    assert not match.with_copies([[1, 0], [0, 1]]).is_identity
    with pytest.raises(AlignmentError, match="copy orders"):
        match.with_copies([[0, 0], [1, 0]])
    with pytest.raises(AlignmentError, match="copy orders"):
        match.with_copies([[1, 0], [0, 1], [0, 1]])


@pytest.mark.parametrize("align", ["chain", "local"])
@pytest.mark.parametrize("layer", ["q", "o"])
def test_layer_steps_put_reordered_query_heads_back(gqa, layer: str, align: str) -> None:
    """A step of the query or output projection from a copy with its query heads reordered
    (and dims moved inside the heads: no rotary here) merges back into the base's own layer,
    and the step's matched-pair costs are each unit with itself (the copies back in place)."""
    from mal_desktop.core.align.generalized import unit_slices
    from mal_desktop.core.merge.assemble import align_step, merge_step
    from mal_desktop.core.merge.plan import AssemblyStep

    model, spec = gqa
    state = model.state()
    donor = permute_state(state, spec, random_permutations(spec, 8), random_copy_orders(spec, 8))
    step = AssemblyStep("t", layer, layer, 1.0, align)
    alignment = run_job(align_step(step, state, spec, donor, spec))
    assert alignment.align == align
    merged = merge_step(step, alignment, state, spec, donor, spec)
    for key in (f"{layer}.weight", f"{layer}.bias"):
        assert torch.allclose(merged[key], state[key], atol=1e-6), key
    w, b = state[f"{layer}.weight"].double(), state[f"{layer}.bias"].double()
    layout = spec.axes[f"{layer}.weight"][0].layout
    own = (unit_slices(w, 0, layout) ** 2).sum(1) + (unit_slices(b, 0, layout) ** 2).sum(1)
    assert torch.allclose(torch.as_tensor(alignment.costs), own, rtol=1e-5)
