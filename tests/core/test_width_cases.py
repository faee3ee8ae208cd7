"""The nine width cases (mal_method.md sec. 3) with chain and with local alignment.

A base MLP (input -> h0 -> h1 -> classes) and a target built from it with a planted generalized
permutation on each hidden space: permuted, a subset of the base's units (base wider) or the
base's units among new ones (base narrower), plus small noise. Aligning the target's layer h1
(out side: h1, in side: h0) to the base's must recover >= 95 % of the planted pairs on each side,
whether chain alignment (layers 0 and 1 jointly, the input anchoring h0) or local alignment (the
one layer pair, both sides free, no anchor) runs.
"""

from __future__ import annotations

import pytest
import torch

from mal_desktop.core.align.generalized import Match
from mal_desktop.core.graph.spec import Axis, Layer, PermutationSpec, Space
from mal_desktop.core.merge.assemble import align_step
from mal_desktop.core.merge.plan import AssemblyStep
from mal_desktop.core.progress import run_job
from planted import planted_sources

# (base, target) units per side; "wider" = the base is wider
OUT = {"wider": (64, 48), "equal": (48, 48), "narrower": (40, 56)}  # h1, the layer's outputs
IN = {"wider": (60, 44), "equal": (50, 50), "narrower": (40, 54)}  # h0, the layer's inputs
D_IN, CLASSES, NOISE = 20, 5, 0.05


def spec_for(h0: int, h1: int) -> PermutationSpec:
    spaces = {"input": Space("input", D_IN, True, "network input"), "h0": Space("h0", h0),
              "h1": Space("h1", h1), "out": Space("out", CLASSES, True, "class output")}
    axes: dict[str, tuple] = {}
    layers = []
    for i, (name, out, inp) in enumerate((("layers.0", "h0", "input"), ("layers.1", "h1", "h0"),
                                          ("head", "out", "h1"))):
        axes[f"{name}.weight"] = (Axis(out), Axis(inp))
        axes[f"{name}.bias"] = (Axis(out),)
        layers.append(Layer(name, "linear", f"{name}.weight", f"{name}.bias", (), Axis(out),
                            Axis(inp), i))
    return PermutationSpec(spaces, axes, layers)


def planted(out_case: str, in_case: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    (b1, t1), (b0, t0) = OUT[out_case], IN[in_case]
    base_sizes = {"layers.0": (b0, D_IN), "layers.1": (b1, b0), "head": (CLASSES, b1)}
    target_sizes = {"layers.0": (t0, D_IN), "layers.1": (t1, t0), "head": (CLASSES, t1)}
    base = {}
    for name, (o, i) in base_sizes.items():
        base[f"{name}.weight"] = torch.randn(o, i, generator=gen) / i ** 0.5
        base[f"{name}.bias"] = 0.1 * torch.randn(o, generator=gen)
    src = {"input": list(range(D_IN)), "h0": planted_sources(b0, t0, gen), "h1": planted_sources(b1, t1, gen),
           "out": list(range(CLASSES))}
    target = {}
    for name, (o, i), out_s, in_s in (("layers.0", target_sizes["layers.0"], "h0", "input"),
                                       ("layers.1", target_sizes["layers.1"], "h1", "h0"),
                                       ("head", target_sizes["head"], "out", "h1")):
        w = torch.randn(o, i, generator=gen) / i ** 0.5
        b = 0.1 * torch.randn(o, generator=gen)
        bw, bb = base[f"{name}.weight"], base[f"{name}.bias"]
        for r, sr in enumerate(src[out_s]):
            if sr < 0:
                continue
            b[r] = bb[sr]
            for c, sc in enumerate(src[in_s]):
                if sc >= 0:
                    w[r, c] = bw[sr, sc]
        scale = NOISE / i ** 0.5
        target[f"{name}.weight"] = w + scale * torch.randn(o, i, generator=gen)
        target[f"{name}.bias"] = b + NOISE * 0.1 * torch.randn(o, generator=gen)
    return (base, spec_for(b0, b1)), (target, spec_for(t0, t1)), src


def recovered(match: Match, source: list[int]) -> float:
    truth = {(s, j) for j, s in enumerate(source) if s >= 0}
    return len(truth & set(zip(match.rows, match.cols))) / len(truth)


@pytest.mark.parametrize("align", ["chain", "local"])
@pytest.mark.parametrize("in_case", list(IN))
@pytest.mark.parametrize("out_case", list(OUT))
def test_planted_map_recovered_in_every_width_case(out_case: str, in_case: str,
                                                   align: str) -> None:
    (base, b_spec), (target, t_spec), src = planted(out_case, in_case, seed=7)
    step = AssemblyStep("target", "layers.1", "layers.1", 1.0, align)
    result = run_job(align_step(step, base, b_spec, target, t_spec))
    assert result.align == align and not result.note
    assert (result.out.case, result.inp.case) == (out_case, in_case)
    out_rate, in_rate = recovered(result.out, src["h1"]), recovered(result.inp, src["h0"])
    assert out_rate >= 0.95 and in_rate >= 0.95, (out_rate, in_rate)


def test_local_alignment_needs_its_profile_starts() -> None:
    """The test above has power: from the identity and random starts alone, local alignment
    recovers almost nothing of the same planted map (both sides permuted)."""
    from mal_desktop.core.align.local import align_layer_pair

    (base, _), (target, _), src = planted("equal", "narrower", seed=7)
    args = (base["layers.1.weight"], base["layers.1.bias"], target["layers.1.weight"],
            target["layers.1.bias"])
    cold = align_layer_pair(*args, in_fixed=False, out_fixed=False, restarts=4,
                            profile_starts=False)
    warm = align_layer_pair(*args, in_fixed=False, out_fixed=False, restarts=4)
    assert recovered(cold.inp, src["h0"]) < 0.3 and recovered(cold.out, src["h1"]) < 0.3
    assert warm.start in ("out profile", "in profile") and warm.objective > cold.objective
