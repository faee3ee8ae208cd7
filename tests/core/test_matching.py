"""Joint weight matching, chain alignment and activation matching (mal_method.md sec. 4, 9).

Permutation specs are written by hand here so these tests do not depend on graph discovery.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mal_desktop.core.align.activations import activation_cost, match_by_activations
from mal_desktop.core.align.generalized import Match
from mal_desktop.core.align.lap import solve_lap
from mal_desktop.core.align.matching import (
    apply_matches,
    chain_pairs,
    match_spaces,
    weight_matching,
)
from mal_desktop.core.errors import AlignmentError
from mal_desktop.core.graph.spec import Axis, Layer, PermutationSpec, Space, permute_state
from mal_desktop.core.progress import Cancelled, CancelToken, ProgressEvent, run_job
from mal_desktop.core.arch.families import build_model

IN_SHAPE = [1, 4, 8]  # 32 input features


def mlp_spec(widths: list[int], d_in: int = 32, classes: int = 5) -> PermutationSpec:
    """Spec of the zoo MLP: layers.i (h_i <- h_{i-1}), head (out <- h_last)."""
    spaces = {"input": Space("input", d_in, True, "network input")}
    axes: dict[str, tuple] = {}
    layers: list[Layer] = []
    prev = "input"
    names = [f"layers.{i}" for i in range(len(widths))] + ["head"]
    sizes = [*widths, classes]
    for i, (name, size) in enumerate(zip(names, sizes)):
        sid = "out" if name == "head" else f"h{i}"
        spaces[sid] = Space(sid, size, name == "head", "class output" if name == "head" else "")
        axes[f"{name}.weight"] = (Axis(sid), Axis(prev))
        axes[f"{name}.bias"] = (Axis(sid),)
        layers.append(Layer(name, "linear", f"{name}.weight", f"{name}.bias", (), Axis(sid),
                            Axis(prev), i))
        prev = sid
    return PermutationSpec(spaces, axes, layers)


def cnn_spec(channels: list[int], hidden: int, classes: int = 5) -> PermutationSpec:
    """Spec of the zoo CNN on 1x8x8: 2 conv-BN blocks, flatten (2x2 per channel), fc, head."""
    c0, c1 = channels
    spaces = {"input": Space("input", 1, True, "network input"), "c0": Space("c0", c0),
              "c1": Space("c1", c1), "fc": Space("fc", hidden),
              "out": Space("out", classes, True, "class output")}
    axes: dict[str, tuple] = {}
    layers: list[Layer] = []
    convs = (("features.0", "c0", "input"), ("features.2", "c1", "c0"))
    for i, (prefix, out_s, in_s) in enumerate(convs):
        axes[f"{prefix}.0.weight"] = (Axis(out_s), Axis(in_s), None, None)
        norm = tuple(f"{prefix}.1.{p}" for p in ("weight", "bias", "running_mean", "running_var",
                                                 "num_batches_tracked"))
        for key in norm[:4]:
            axes[key] = (Axis(out_s),)
        axes[norm[4]] = ()
        layers.append(Layer(f"{prefix}.0", "conv2d", f"{prefix}.0.weight", None, norm, Axis(out_s),
                            Axis(in_s), i, (3, 3)))
    axes["fc.weight"] = (Axis("fc"), Axis("c1", block=4))
    axes["fc.bias"] = (Axis("fc"),)
    axes["head.weight"] = (Axis("out"), Axis("fc"))
    axes["head.bias"] = (Axis("out"),)
    layers.append(Layer("fc", "linear", "fc.weight", "fc.bias", (), Axis("fc"), Axis("c1", 4), 2))
    layers.append(Layer("head", "linear", "head.weight", "head.bias", (), Axis("out"), Axis("fc"),
                        3))
    return PermutationSpec(spaces, axes, layers)


def _mlp(widths: list[int], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", {"input_shape": IN_SHAPE, "num_classes": 5, "widths": widths})


def _random_perms(spec: PermutationSpec, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {s.id: torch.randperm(s.size, generator=gen) for s in spec.free_spaces()}


def _outputs(module: torch.nn.Module, state: dict[str, torch.Tensor],
             x: torch.Tensor) -> torch.Tensor:
    module.load_state_dict(state)
    with torch.no_grad():
        return module(x)


def test_weight_matching_recovers_mlp_permutation() -> None:
    spec = mlp_spec([24, 20, 16])
    model = _mlp([24, 20, 16], seed=0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    perms = _random_perms(spec, seed=1)
    target = permute_state(base, spec, perms)
    x = torch.randn(7, *IN_SHAPE, generator=torch.Generator().manual_seed(2))
    # sec. 9: a permuted network computes the same function
    assert torch.allclose(_outputs(model, target, x), _outputs(model, base, x), atol=1e-5)

    found = run_job(weight_matching(base, target, spec, seed=3))
    assert set(found) == {"h0", "h1", "h2"}
    for space, p in perms.items():
        assert torch.equal(found[space], torch.argsort(p))  # the inverse of the planted perm
    back = permute_state(target, spec, found)
    assert all(torch.equal(back[k], base[k]) for k in base)
    assert torch.allclose(_outputs(model, back, x), _outputs(model, base, x), atol=1e-6)


def test_weight_matching_recovers_cnn_permutation_with_norms_and_flatten() -> None:
    spec = cnn_spec([6, 8], 12)
    torch.manual_seed(4)
    model = build_model("cnn", {"input_shape": [1, 8, 8], "num_classes": 5, "channels": [6, 8],
                                "hidden": 12})
    base = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(5)
    for key, value in list(base.items()):  # non-trivial norm parameters and statistics
        if key.endswith(("1.weight", "1.bias", "running_mean")):
            base[key] = torch.randn(value.shape, generator=gen)
        elif key.endswith("running_var"):
            base[key] = torch.rand(value.shape, generator=gen) + 0.5
    perms = _random_perms(spec, seed=6)
    target = permute_state(base, spec, perms)
    x = torch.randn(3, 1, 8, 8, generator=gen)
    assert torch.allclose(_outputs(model, target, x), _outputs(model, base, x), atol=1e-5)

    found = run_job(weight_matching(base, target, spec))
    for space, p in perms.items():
        assert torch.equal(found[space], torch.argsort(p))
    back = permute_state(target, spec, found)
    assert torch.allclose(_outputs(model, back, x), _outputs(model, base, x), atol=1e-6)


def test_weight_matching_of_two_seeds_raises_objective() -> None:
    spec = mlp_spec([16, 16])
    base = _mlp([16, 16], 7).state_dict()
    target = _mlp([16, 16], 8).state_dict()
    events: list[ProgressEvent] = []
    job = match_spaces(base, spec, target, spec, {"h0": "h0", "h1": "h1"},
                       [(k, k) for k in base], seed=0)
    result = run_job(job, events.append)
    hist = result.objective_history
    assert hist[-1] > hist[0]  # beats index alignment
    assert all(b >= a for a, b in itertools.pairwise(hist))
    assert result.converged
    assert [e.payload["sweep"] for e in events] == list(range(1, result.sweeps + 1))
    assert [e.payload["objective"] for e in events] == list(hist[1:])
    assert events[-1].fraction == 1.0


def _free_pairs(spec: PermutationSpec, base: dict) -> tuple[dict[str, str], list]:
    return {s.id: s.id for s in spec.free_spaces()}, [(k, k) for k in base]


def test_restarts_keep_a_better_optimum_than_one_run() -> None:
    """Coordinate descent from the identity settles in a local optimum on this seed pair; the
    restarts (random starts, own space orders) find a higher J and the best one is kept."""
    spec = mlp_spec([16, 16, 16])
    base, target = _mlp([16, 16, 16], 5).state_dict(), _mlp([16, 16, 16], 6).state_dict()
    pairs, tensors = _free_pairs(spec, base)
    single = run_job(match_spaces(base, spec, target, spec, pairs, tensors, seed=0))
    events: list[ProgressEvent] = []
    best = run_job(match_spaces(base, spec, target, spec, pairs, tensors, seed=0, restarts=4),
                   events.append)
    assert (single.restart, single.restarts) == (0, 1)
    assert best.restarts == 4 and best.restart > 0  # a random start won
    assert best.objective > single.objective * 1.03
    runs = [run_job(match_spaces(base, spec, target, spec, pairs, tensors, seed=0, restarts=r))
            for r in (1, 2, 3, 4)]
    assert all(b.objective >= a.objective for a, b in itertools.pairwise(runs))
    assert {e.payload["restart"] for e in events} == {0, 1, 2, 3}
    assert all(b.fraction >= a.fraction for a, b in itertools.pairwise(events))
    assert events[-1].fraction == 1.0
    # the J it reports is the J of the matches it returns
    perms = run_job(weight_matching(base, target, spec, seed=0, restarts=4))
    assert perms == {} or all(torch.equal(perms[s], best.matches[s].permutation()) for s in perms)


@pytest.mark.parametrize("seed", range(4))
def test_weight_matching_is_never_worse_than_identity(seed: int) -> None:
    """J(result) >= J(identity) on random pairs, including near copies, where the identity is
    already the optimum and a random start can only end below it."""
    widths = [12, 10]
    spec = mlp_spec(widths)
    base = _mlp(widths, 20 + seed).state_dict()
    gen = torch.Generator().manual_seed(seed)
    if seed % 2:
        target = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    else:
        target = _mlp(widths, 40 + seed).state_dict()
    pairs, tensors = _free_pairs(spec, base)
    result = run_job(match_spaces(base, spec, target, spec, pairs, tensors, seed=seed,
                                  restarts=4))
    assert result.objective >= result.identity_objective
    identity = {s: torch.arange(spec.spaces[s].size) for s in pairs}

    def j(perms: dict[str, torch.Tensor]) -> float:
        moved = permute_state(target, spec, perms)
        return sum(float((base[k].double() * moved[k].double()).sum()) for k, _ in tensors)

    found = run_job(weight_matching(base, target, spec, seed=seed))
    assert j(found) >= j(identity) - 1e-9
    assert j(found) == pytest.approx(result.objective, rel=1e-9)
    if seed % 2:  # the near copy: nothing moves
        assert all(torch.equal(p, identity[s]) for s, p in found.items())


def test_identity_is_kept_when_no_run_beats_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run ending below the identity's J (forced here: every LAP answer is accepted, so J can
    drop) is never returned; the identity is, marked restart -1."""
    from mal_desktop.core.align import descent

    spec = mlp_spec([12, 10])
    base = _mlp([12, 10], 30).state_dict()
    target = {k: v.clone() for k, v in base.items()}  # the identity is the optimum
    pairs, tensors = _free_pairs(spec, base)

    def worst(self: descent._Descent, space: str) -> bool:  # a descent that makes J worse
        current = self.matches[space]
        rows, cols = solve_lap(self.space_cost(space), maximize=False)
        candidate = Match.from_lap(rows, cols, current.base_size, current.target_size)
        changed = candidate != current
        self.matches[space] = candidate
        return changed

    monkeypatch.setattr(descent._Descent, "improve_space", worst)
    result = run_job(match_spaces(base, spec, target, spec, pairs, tensors, restarts=3,
                                  max_iter=2))
    assert result.restart == -1 and result.restarts == 3
    assert all(result.matches[s].is_identity for s in pairs)
    assert result.objective == result.identity_objective


def _chain_job(cancel: CancelToken | None = None, seed: int = 0):
    b_spec, t_spec = mlp_spec([24, 20]), mlp_spec([16, 28])
    base, target = _mlp([24, 20], 10).state_dict(), _mlp([16, 28], 11).state_dict()
    space_pairs, tensor_pairs = chain_pairs(b_spec, t_spec, 2, 2)
    job = match_spaces(base, b_spec, target, t_spec, space_pairs, tensor_pairs, seed=seed,
                       cancel=cancel)
    return job, (base, b_spec, target, t_spec, tensor_pairs)


def test_chain_pairs_of_mlps_of_different_widths() -> None:
    b_spec, t_spec = mlp_spec([24, 20]), mlp_spec([16, 28])
    space_pairs, tensor_pairs = chain_pairs(b_spec, t_spec, 1, "layers.1")
    assert space_pairs == {"h0": "h0", "input": "input", "h1": "h1"}
    assert tensor_pairs == [(k, k) for k in ("layers.0.weight", "layers.0.bias",
                                             "layers.1.weight", "layers.1.bias")]


def test_match_spaces_chain_different_widths() -> None:
    job, (base, b_spec, target, t_spec, tensor_pairs) = _chain_job()
    events: list[ProgressEvent] = []
    result = run_job(job, events.append)
    assert result.optimised == ("h0", "h1")
    assert result.matches["h0"].case == "wider" and result.matches["h1"].case == "narrower"
    assert result.matches["input"].is_identity and result.matches["out"].is_identity
    hist = result.objective_history
    assert len(hist) == result.sweeps + 1 == len(events) + 1
    assert all(b >= a for a, b in itertools.pairwise(hist))
    assert hist[-1] > hist[0]

    mapped = apply_matches(target, t_spec, b_spec, tensor_pairs, result.matches)
    for key, (tensor, mask) in mapped.items():
        assert tensor.shape == base[key].shape == mask.shape
        assert (tensor[~mask] == 0).all()
    # layers.0: 24 base units <- 16 target units: 8 zero-padded rows
    assert mapped["layers.0.weight"][1].all(dim=1).sum() == 16
    # layers.1: rows 20 <- 28 (all matched), columns 24 <- 16 (8 padded)
    assert mapped["layers.1.weight"][1].all(dim=0).sum() == 16
    h0 = result.matches["h0"]
    assert torch.equal(mapped["layers.0.bias"][0][list(h0.rows)],
                       target["layers.0.bias"][list(h0.cols)])


def test_match_spaces_chain_recovers_planted_units() -> None:
    """Target = base with hidden units shuffled, some dropped (h0) and new ones added (h1)."""
    b_spec, t_spec = mlp_spec([24, 20]), mlp_spec([18, 26])
    base = _mlp([24, 20], 12).state_dict()
    gen = torch.Generator().manual_seed(13)
    src0 = torch.randperm(24, generator=gen)[:18]  # target h0 unit j = base unit src0[j]
    pos1 = torch.randperm(26, generator=gen)[:20]  # base h1 unit i sits at target unit pos1[i]
    target = _mlp([18, 26], 14).state_dict()  # the 6 extra h1 units stay random
    w1 = torch.randn(26, 18, generator=gen) * 0.1
    w1[pos1] = base["layers.1.weight"][:, src0]
    target["layers.0.weight"] = base["layers.0.weight"][src0].clone()
    target["layers.0.bias"] = base["layers.0.bias"][src0].clone()
    target["layers.1.weight"] = w1
    target["layers.1.bias"][pos1] = base["layers.1.bias"]
    target["head.weight"] = torch.zeros(5, 26)
    target["head.weight"][:, pos1] = base["head.weight"]
    target["head.bias"] = base["head.bias"].clone()
    space_pairs, tensor_pairs = chain_pairs(b_spec, t_spec, "head", "head")
    result = run_job(match_spaces(base, b_spec, target, t_spec, space_pairs, tensor_pairs))
    assert result.matches["h0"] == Match.from_lap(src0, torch.arange(18), 24, 18)
    assert result.matches["h1"] == Match.from_lap(torch.arange(20), pos1, 20, 26)
    mapped = apply_matches(target, t_spec, b_spec, tensor_pairs, result.matches)
    for key, (tensor, mask) in mapped.items():
        assert torch.equal(tensor[mask], base[key][mask])


def test_match_spaces_cancellation() -> None:
    token = CancelToken()
    token.cancel()
    job, _ = _chain_job(cancel=token)
    with pytest.raises(Cancelled):
        run_job(job)

    token = CancelToken()
    job, _ = _chain_job(cancel=token)
    seen: list[ProgressEvent] = []

    def cancel_after_first(event: ProgressEvent) -> None:
        seen.append(event)
        token.cancel()

    with pytest.raises(Cancelled):
        run_job(job, cancel_after_first)  # sweep 1 moves units, so a second sweep would follow
    assert len(seen) == 1


def test_chain_pairs_rejects_inconsistent_prefixes() -> None:
    b_spec, t_spec = mlp_spec([24, 20]), mlp_spec([16, 28, 12])
    with pytest.raises(AlignmentError, match="same depth"):
        chain_pairs(b_spec, t_spec, "head", "head")
    with pytest.raises(AlignmentError, match="no layer"):
        chain_pairs(b_spec, t_spec, "nope", 0)
    # a residual-like base where layer 1 writes the stream it reads: h0 would pair with two spaces
    res = mlp_spec([24, 24])
    res.layers[1] = Layer("layers.1", "linear", "layers.1.weight", "layers.1.bias", (),
                          Axis("h0"), Axis("h0"), 1)
    with pytest.raises(AlignmentError, match="not one chain"):
        chain_pairs(res, mlp_spec([16, 28]), 1, 1)
    conv = cnn_spec([6, 8], 12)
    with pytest.raises(AlignmentError, match="conv2d vs linear"):
        chain_pairs(conv, mlp_spec([6, 8]), 0, 0)


def test_match_spaces_rejects_fixed_spaces_of_different_size() -> None:
    b_spec, t_spec = mlp_spec([8], classes=5), mlp_spec([8], classes=3)
    torch.manual_seed(0)
    base = build_model("mlp", {"input_shape": IN_SHAPE, "num_classes": 5, "widths": [8]})
    target = build_model("mlp", {"input_shape": IN_SHAPE, "num_classes": 3, "widths": [8]})
    space_pairs, tensor_pairs = chain_pairs(b_spec, t_spec, "head", "head")
    with pytest.raises(AlignmentError, match="class output"):
        run_job(match_spaces(base.state_dict(), b_spec, target.state_dict(), t_spec, space_pairs,
                             tensor_pairs))


def test_activation_matching_recovers_units() -> None:
    gen = torch.Generator().manual_seed(15)
    base_acts = torch.randn(64, 10, 3, 3, generator=gen)
    src = torch.randperm(10, generator=gen)[:7]  # the target has 7 of the base's channels
    target_acts = 2.0 * base_acts[:, src] + 0.05 * torch.randn(64, 7, 3, 3, generator=gen) + 1.0
    cost = activation_cost(base_acts, target_acts)
    assert cost.shape == (10, 7) and cost.abs().max() <= 1.0 + 1e-9
    match = match_by_activations(base_acts, target_acts)
    assert match == Match.from_lap(src, torch.arange(7), 10, 7)
    with pytest.raises(AlignmentError, match="different batches"):
        activation_cost(torch.zeros(4, 3), torch.zeros(5, 3))


@pytest.mark.parametrize("family", ["mlp-w32", "resnet-w8"])
def test_skipping_spaces_whose_neighbours_did_not_move_changes_nothing(small_zoo, family,
                                                                        monkeypatch):
    """Coordinate descent skips a space while none of its neighbours moved: the matches and the
    J history are those of solving every space every sweep, with fewer LAPs."""
    from mal_desktop.core.align import descent, matching
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.io.files import load_model
    from mal_desktop.core.progress import run_job

    base = load_model(small_zoo.path_of(f"{family}-s0"))
    target = load_model(small_zoo.path_of("mlp-w32-s1")) if family == "mlp-w32" else base
    if family == "resnet-w8":  # a permuted copy, so the descent has work to do
        spec = discover_spec(base)
        gen = torch.Generator().manual_seed(3)
        perms = {s: torch.randperm(sp.size, generator=gen) for s, sp in spec.spaces.items()
                 if not sp.fixed}
        target_state = permute_state(base.state(), spec, perms)
    else:
        spec = discover_spec(base)
        target_state = target.state()
    solves = {"count": 0}
    real = descent._Descent.improve_space

    def counting(self, space):
        solves["count"] += space in self.stale
        return real(self, space)

    monkeypatch.setattr(descent._Descent, "improve_space", counting)
    skipping = run_job(matching.whole_model_match(base.state(), target_state, spec))
    skipped_solves = solves["count"]

    def every_space(self, space):
        self.stale.add(space)  # as if a neighbour had always moved
        solves["count"] += 1
        return real(self, space)

    solves["count"] = 0
    monkeypatch.setattr(descent._Descent, "improve_space", every_space)
    full = run_job(matching.whole_model_match(base.state(), target_state, spec))
    assert skipping.matches == full.matches
    assert skipping.objective_history == full.objective_history
    assert skipped_solves < solves["count"]


@pytest.mark.parametrize("case", ["planted-mlp", "planted-cnn", "zoo-mlp-seeds", "zoo-resnet"])
def test_float32_costs_give_the_float64_matches(small_zoo, case):
    """Cost products in float32 (the default) find the same matches as float64 products, and the
    same J history (J is summed in float64 either way): on planted permutations with noise, on
    two trained seeds of the digits zoo and on a permuted copy of a trained ResNet."""
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.io.files import load_model

    gen = torch.Generator().manual_seed(11)
    planted = None
    if case.startswith("planted"):
        if case == "planted-mlp":
            spec = mlp_spec([48, 40, 32])
            base = _mlp([48, 40, 32], seed=12).state_dict()
        else:
            spec = cnn_spec([6, 8], 12)
            torch.manual_seed(13)
            base = build_model("cnn", {"input_shape": [1, 8, 8], "num_classes": 5,
                                       "channels": [6, 8], "hidden": 12}).state_dict()
        planted = _random_perms(spec, seed=14)
        target = {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point()
                  else v for k, v in permute_state(base, spec, planted).items()}
    else:
        family = "mlp-w32" if case == "zoo-mlp-seeds" else "resnet-w8"
        model = load_model(small_zoo.path_of(f"{family}-s0"))
        spec, base = discover_spec(model), model.state()
        if case == "zoo-mlp-seeds":
            target = load_model(small_zoo.path_of("mlp-w32-s1")).state()
        else:
            target = permute_state(base, spec, _random_perms(spec, seed=15))
    pairs, tensors = _free_pairs(spec, base)
    results = {dtype: run_job(match_spaces(base, spec, target, spec, pairs, tensors, restarts=4,
                                           cost_dtype=dtype))
               for dtype in (torch.float32, torch.float64)}
    single, double = results[torch.float32], results[torch.float64]
    assert single.matches == double.matches
    assert single.objective_history == pytest.approx(double.objective_history, rel=1e-12)
    assert single.objective > single.identity_objective
    if planted is not None:
        for space, p in planted.items():
            assert single.matches[space] == Match.from_permutation(torch.argsort(p))


@pytest.mark.parametrize("family", ["mlp-w64", "resnet-w8"])
def test_reused_cost_products_change_nothing(small_zoo, family, monkeypatch):
    """Products kept between visits (those whose other-axis matches did not move) give the
    matches and J history of rebuilding every product at every visit, with fewer products."""
    from mal_desktop.core.align import products
    from mal_desktop.core.graph.discover import discover_spec
    from mal_desktop.core.io.files import load_model

    model = load_model(small_zoo.path_of(f"{family}-s0"))
    spec, base = discover_spec(model), model.state()
    target = permute_state(base, spec, _random_perms(spec, seed=16))
    target = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(17))
              if v.is_floating_point() else v for k, v in target.items()}
    pairs, tensors = _free_pairs(spec, base)
    built = {"count": 0}
    real = products.CostProducts._product

    def counting(self, *args):
        built["count"] += 1
        return real(self, *args)

    monkeypatch.setattr(products.CostProducts, "_product", counting)
    reused = run_job(match_spaces(base, spec, target, spec, pairs, tensors, restarts=2))
    reused_count, built["count"] = built["count"], 0
    monkeypatch.setattr(products, "MIN_REUSED_ENTRIES_PER_UNIT", 10**12)  # nothing kept
    rebuilt = run_job(match_spaces(base, spec, target, spec, pairs, tensors, restarts=2))
    assert reused.matches == rebuilt.matches
    assert reused.objective_history == rebuilt.objective_history
    assert reused_count < built["count"]


def test_costs_are_float32_unless_a_tensor_is_float64(monkeypatch):
    """float32 models get float32 products; a float64 model keeps float64 (float32 copies
    would round its weights, and J would no longer be the model's)."""
    from mal_desktop.core.align import descent

    seen: list[torch.dtype] = []
    real = descent._device_pairs

    def recording(base_state, target_state, infos, device, dtype):
        seen.append(dtype)
        return real(base_state, target_state, infos, device, dtype)

    monkeypatch.setattr(descent, "_device_pairs", recording)
    spec = mlp_spec([12, 10])
    base, target = _mlp([12, 10], 20).state_dict(), _mlp([12, 10], 21).state_dict()
    pairs, tensors = _free_pairs(spec, base)
    single = run_job(match_spaces(base, spec, target, spec, pairs, tensors))
    doubled = {k: v.double() for k, v in target.items()}
    double = run_job(match_spaces(base, spec, doubled, spec, pairs, tensors))
    assert seen == [torch.float32, torch.float64]
    assert single.matches == double.matches


def test_axes_laid_out_differently_are_named_for_their_layout() -> None:
    """Two specs whose axes agree in block but not in copies (grouped-query Q rows written
    twice against three times per key/value head) are refused for their layout, not as
    '1 vs 1 features per unit (different spatial sizes)'."""
    spaces = {"h": Space("h", 4), "s": Space("s", 3)}
    base = PermutationSpec(spaces, {"q": (Axis("h", 1, 1, 2, 2), Axis("s"))})
    target = PermutationSpec(spaces, {"q": (Axis("h", 1, 1, 3, 2), Axis("s"))})
    with pytest.raises(AlignmentError, match="laid out differently") as err:
        run_job(match_spaces({"q": torch.randn(8, 3)}, base, {"q": torch.randn(12, 3)}, target,
                             {"h": "h", "s": "s"}, [("q", "q")]))
    assert "spatial" not in str(err.value)
