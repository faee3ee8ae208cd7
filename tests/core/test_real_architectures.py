"""Discovery on model code written the way other people write it (issue 8).

For every idiom: the self-test has power (free spaces > 0, the expected spaces free, outputs
unchanged under every free permutation), and a permuted copy (every discovered space permuted at
random: attention heads permuted and, where the model allows, the dims inside each head) realigns through whole-model weight matching to a barrier
below 1e-4 along the interpolation curve. The transformers models are tiny, built from configs
with random weights (no downloads); they are skipped when the optional [hf] extra is missing.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mal_desktop.core.align.activations import activation_matching
from mal_desktop.core.evaluate.metrics import barrier, lambda_grid
from mal_desktop.core.graph import file_spec
from mal_desktop.core.graph.discover import discover_spec
from mal_desktop.core.graph.selftest import random_copy_orders, random_permutations, self_test
from mal_desktop.core.graph.spec import (HeadGroup, PermutationSpec, head_permutation_of,
                                         permute_state)
from mal_desktop.core.graph.spec_cache import spec_from_json, spec_to_json
from mal_desktop.core.io.model import LoadedModel
from mal_desktop.core.jobs import ModelCache, curve_series

sys.path.insert(0, str(Path(__file__).parent))  # tests/core is not a package
import idiom_modules as im  # noqa: E402


def randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial biases, norm parameters and statistics: a wrong permutation must show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return module.eval()


def loaded(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype | None = None,
           vocab: int | None = None) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(module=randomize(module), arch={"kind": "memory"}, input_shape=shape,
                       num_classes=3, input_dtype=dtype, input_range=vocab)


def realign_barrier(model: LoadedModel, spec: PermutationSpec, seed: int = 3) -> tuple[float, float]:
    """(naive, aligned) barrier of a permuted copy against the model, on the model's own
    predictions (cross-entropy over the last axis), along an 11-point curve. The copy has
    every free space permuted and the query heads of each grouped-query group reordered."""
    state = model.state()
    permuted = permute_state(state, spec, random_permutations(spec, seed),
                             random_copy_orders(spec, seed))
    target = model.with_state(permuted)
    cache = ModelCache({"base": model, "target": target}, specs={"base": spec, "target": spec})
    series = curve_series(cache, "base", "target", align="weight")
    recovered = series.aligned(1.0)  # the realigned copy is the model itself, unit for unit
    assert all(torch.allclose(recovered[k], v, atol=1e-6) for k, v in state.items())
    x = model.example_input(16, seed=seed)
    probe = target.with_state(state).module
    with torch.no_grad():
        labels = model.module(x).argmax(-1)

        def losses(state_at) -> list[float]:
            out = []
            for lam in lambda_grid(11):
                probe.load_state_dict(state_at(lam), strict=True)
                logits = probe(x)
                out.append(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1))))
            return out

        grid = lambda_grid(11)
        return barrier(grid, losses(series.naive)), barrier(grid, losses(series.aligned))


def moves_within_heads(spec: PermutationSpec, seed: int = 3) -> list[str]:
    """The spaces whose planted permutation (as ``realign_barrier`` plants it) keeps heads whole
    and moves dims inside a head: what the realignment must then recover."""
    moved = []
    for space, perm in random_permutations(spec, seed).items():
        group = spec.head_groups.get(space)
        if group is None or group.dim == 1:
            continue
        heads = head_permutation_of(perm, group.dim)
        assert heads is not None, space  # heads stay whole
        if not torch.equal(perm % group.dim, torch.arange(len(perm)) % group.dim):
            moved.append(space)
    return sorted(moved)


def check(model: LoadedModel, expect_free: list[str] = (), min_free: int = 1,
          within_heads: int = 0) -> PermutationSpec:
    spec = discover_spec(model)
    report = self_test(model, spec)
    assert report.status == "passed", (report.status, report.per_space, report.overall)
    assert report.free >= min_free
    assert file_spec._fits(spec, model.state())  # stored in a file, it would be accepted
    # and its self-test on rescaled weights (how a file's spec is verified) passes too
    assert self_test(model, spec, seed=987, jitter=True).status == "passed"
    # spaces whose dims move inside their heads: counted by the self-test, planted below
    inner = sorted(s for s, g in spec.head_groups.items() if g.inner_free)
    assert len(inner) == within_heads, spec.head_groups
    assert moves_within_heads(spec) == inner
    free = [s.id for s in spec.free_spaces()]
    for prefix in expect_free:
        assert any(s.startswith(prefix) for s in free), (prefix, free)
    naive, aligned = realign_barrier(model, spec)
    assert aligned < 1e-4, (naive, aligned)
    return spec


# ----- our own modules in other people's styles ---------------------------------------------

def test_resnet_with_inplace_residual_keeps_its_stream_free() -> None:
    spec = check(loaded(im.ResNet(), (1, 8, 8)), ["P_stream_stem"], min_free=3)
    stream = spec.axes["stem.weight"][0].space
    assert spec.axes["layer.1.conv2.weight"][0].space == stream
    assert spec.axes["fc.weight"][1].space == stream


def test_position_major_flatten_is_tiled_not_pinned() -> None:
    spec = check(loaded(im.PosMajorCNN(), (1, 8, 8)), ["P_c2", "P_fc"], min_free=3)
    axis = spec.axes["fc.weight"][1]
    assert (axis.space, axis.block, axis.tiles) == ("P_c2", 4, 4)  # (H=4, C=5, W=4) rows


def test_prelu_slopes_ride_with_their_channels() -> None:
    spec = check(loaded(im.PReLUNet(), (1, 8, 8)), ["P_c", "P_fc1"], min_free=2)
    assert spec.axes["a.weight"][0].space == "P_c"
    assert spec.axes["a2.weight"][0].space == "P_fc1"
    assert spec.axes["a3.weight"] == (None,)  # one shared slope: nothing to permute


@pytest.mark.parametrize("cell,gates", [("lstm", 4), ("gru", 3)])
def test_recurrent_hidden_units_move_with_their_gates(cell: str, gates: int) -> None:
    spec = check(loaded(im.LSTMNet(cell), (4, 5)), ["P_rnn"])
    hidden = spec.axes["fc.weight"][1].space
    for key in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0"):
        assert spec.axes[key][0].space == hidden and spec.axes[key][0].tiles == gates
    assert spec.axes["rnn.weight_hh_l0"][1].space == hidden


def test_stacked_bidirectional_lstm_has_a_space_per_layer() -> None:
    spec = check(loaded(im.LSTMNet("lstm", 2, True), (4, 5)), min_free=2)
    assert spec.axes["rnn.weight_ih_l0"][0].space != spec.axes["rnn.weight_ih_l1"][0].space
    assert spec.axes["rnn.weight_ih_l1"][1].tiles == 2  # reads both directions of layer 0


def test_gpt2_style_conv1d_is_a_layer() -> None:
    spec = check(loaded(im.Conv1DNet(), (4, 5)), ["P_c_fc"])
    layer = spec.layer("c_fc")
    assert layer.transposed and layer.out_axis.space == "P_c_fc"
    assert spec.axes["c_fc.weight"][1].space == "P_c_fc"


def _assert_fused(spec: PermutationSpec, qkv: str, dim_axis: int, o: str, o_axis: int,
                  heads: int, dim: int) -> None:
    """One fused projection writes q, k and v: its output is one space of three segments; q and
    k share their within-head permutations, v shares its own with the output projection."""
    axis = spec.axes[qkv][dim_axis]
    assert (axis.block, axis.tiles) == (1, 1) and spec.spaces[axis.space].size == 3 * heads * dim
    group = spec.head_groups[axis.space]
    (q, _), (k, _), (v, _) = group.parts
    assert q == k != v and (group.heads, group.dim) == (heads, dim)
    out = spec.head_groups[spec.axes[o][o_axis].space]
    assert out.family == group.family and out.parts == ((v, ""),)


def test_hand_written_attention_permutes_heads_and_their_dims() -> None:
    spec = check(loaded(im.TinyTransformer(), (4, 5)), ["P_heads_attn.qkv", "P_stream_inp", "P_fc1"],
                 within_heads=2)
    _assert_fused(spec, "attn.qkv.weight", 0, "attn.proj.weight", 1, 2, 4)


def test_torch_transformer_encoder_permutes_heads_and_their_dims() -> None:
    spec = check(loaded(im.TorchEncoder(), (4, 5)), ["P_heads_enc.layers.0.self_attn"],
                 within_heads=2)
    _assert_fused(spec, "enc.layers.0.self_attn.in_proj_weight", 0,
                  "enc.layers.0.self_attn.out_proj.weight", 1, 2, 4)


# ----- transformers configs (optional [hf] extra) -------------------------------------------

Logits = im.Logits


@pytest.fixture(scope="module")
def transformers():
    tf = pytest.importorskip("transformers")
    tf.logging.set_verbosity_error()
    return tf


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def test_bert_heads_and_stream_are_free(transformers) -> None:
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=24,
                                  max_position_embeddings=16, num_labels=3)
    model = loaded(Logits(_quiet(lambda: transformers.BertForSequenceClassification(cfg))), (6,),
                   torch.int64, 40)
    spec = check(model, ["P_heads_model.bert.encoder.layer.0.attention.self.query",
                         "P_stream_model.bert.encoder.layer.0.attention.output.dense"], min_free=3,
                 within_heads=2)
    assert spec.spaces[spec.axes["model.bert.embeddings.word_embeddings.weight"][0].space].fixed
    _assert_qk_vo(spec, "model.bert.encoder.layer.0.attention.self.query",
                  "model.bert.encoder.layer.0.attention.self.key",
                  "model.bert.encoder.layer.0.attention.self.value",
                  "model.bert.encoder.layer.0.attention.output.dense", 2, 8)


def _assert_qk_vo(spec: PermutationSpec, q: str, k: str, v: str, o: str, heads: int,
                  dim: int) -> tuple[HeadGroup, HeadGroup]:
    """Q and K rows share one space, V rows and O's input another; one family of heads."""
    qk = spec.axes[f"{q}.weight"][0].space
    vo = spec.axes[f"{v}.weight"][0].space
    assert spec.axes[f"{k}.weight"][0].space == qk != vo
    assert spec.axes[f"{o}.weight"][1].space == vo
    for space in (qk, vo):
        assert spec.spaces[space].size == heads * dim and not spec.spaces[space].fixed
    gq, gv = spec.head_groups[qk], spec.head_groups[vo]
    assert gq.family == gv.family and (gq.heads, gq.dim) == (gv.heads, gv.dim) == (heads, dim)
    return gq, gv


def test_gpt2_fused_qkv_and_conv1d(transformers) -> None:
    cfg = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    model = loaded(Logits(_quiet(lambda: transformers.GPT2LMHeadModel(cfg))), (6,), torch.int64, 40)
    spec = check(model, ["P_heads_model.transformer.h.0.attn.c_attn"], min_free=3, within_heads=2)
    assert spec.layer("model.transformer.h.0.attn.c_attn").transposed
    h0 = "model.transformer.h.0.attn"
    _assert_fused(spec, f"{h0}.c_attn.weight", 1, f"{h0}.c_proj.weight", 0, 2, 8)  # (in, out)


def test_sdpa_grouped_query_heads_move_with_their_dims() -> None:
    """SDPA with enable_gqa: 2 key/value heads of 4 dims, each read by 2 query heads; with no
    rotary table both the Q/K and the V/O dims move inside a head (Q's rows and O's columns
    hold each key/value head's dims once per query head of its group)."""
    spec = check(loaded(im.GroupedQueryAttention(), (4, 5)), ["P_heads_q", "P_heads_v"],
                 min_free=3, within_heads=2)
    q, k, o = spec.axes["q.weight"][0], spec.axes["k.weight"][0], spec.axes["o.weight"][1]
    assert q.space == k.space and (q.repeat, q.span, k.repeat) == (2, 4, 1)
    assert o.space == spec.axes["v.weight"][0].space and (o.repeat, o.span) == (2, 4)
    assert all((g.heads, g.dim) == (2, 4) and g.inner_free for g in spec.head_groups.values())
    back = spec_from_json(json.loads(json.dumps(spec_to_json(spec))))  # the spec cache
    assert back.axes == spec.axes and back.head_groups == spec.head_groups
    # activation matching reads Q's repeated rows too: a permuted copy, its query heads
    # reordered inside their groups, is recovered
    model = loaded(im.GroupedQueryAttention(), (4, 5))
    state = model.state()
    target = model.with_state(permute_state(state, spec, random_permutations(spec, 5),
                                            random_copy_orders(spec, 5)))
    perms, orders = activation_matching(model.module, target.module, spec,
                                        model.example_input(16, seed=2))
    assert orders  # the planted reorder was undone
    realigned = permute_state(target.state(), spec, perms, orders)
    assert all(torch.allclose(realigned[k], v, atol=1e-6) for k, v in state.items())


def _llama_gqa(transformers) -> LoadedModel:
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=24, max_position_embeddings=16)
    return loaded(Logits(_quiet(lambda: transformers.LlamaForCausalLM(cfg))), (6,), torch.int64, 40)


def test_llama_grouped_query_attention_with_rotary(transformers) -> None:
    """4 query heads read 2 key/value heads: the key/value heads move, each with its query
    heads, and inside each the V/O dims (V's rows and, for every query head of the group, O's
    columns); the rotary table pins the Q/K dims. A permuted copy realigns."""
    model = _llama_gqa(transformers)
    attn = "model.model.layers.0.self_attn"
    spec = check(model, [f"P_heads_{attn}.q_proj", f"P_heads_{attn}.v_proj",
                         "P_stream_model.model.layers.0.mlp.gate_proj"], min_free=4,
                 within_heads=1)
    q, k = spec.axes[f"{attn}.q_proj.weight"][0], spec.axes[f"{attn}.k_proj.weight"][0]
    v, o = spec.axes[f"{attn}.v_proj.weight"][0], spec.axes[f"{attn}.o_proj.weight"][1]
    # one space of 2 heads x 4 dims each for Q/K and V/O; Q's rows and O's columns hold each
    # key/value head's dims twice (once per query head of its group)
    assert q.space == k.space != v.space == o.space
    assert spec.spaces[q.space].size == spec.spaces[v.space].size == 8
    assert (q.repeat, q.span, o.repeat, o.span) == (2, 4, 2, 4) and k.repeat == v.repeat == 1
    qk, vo = spec.head_groups[q.space], spec.head_groups[v.space]
    assert qk.family == vo.family and (qk.heads, qk.dim) == (vo.heads, vo.dim) == (2, 4)
    assert vo.inner_free and not qk.inner_free
    (_, why), = qk.parts
    assert "rotary" in why and attn in why


def test_llama_grouped_query_realignment_needs_the_value_dims_solve(transformers,
                                                                    monkeypatch) -> None:
    """With the within-head solve of the V/O dims switched off (heads matched whole, dims
    kept in order) the planted copy no longer realigns: the V/O dims are really solved."""
    import mal_desktop.core.align.descent as descent
    from dataclasses import replace

    model = _llama_gqa(transformers)
    spec = discover_spec(model)
    assert moves_within_heads(spec)  # the planted copy moves V/O dims inside heads
    real = descent.solve_family
    monkeypatch.setattr(descent, "solve_family", lambda costs, family: real(
        costs, replace(family, inner_free=tuple(False for _ in family.inner_free))))
    with pytest.raises(AssertionError):
        realign_barrier(model, spec)


def test_llama_grouped_query_activation_matching_reorders_query_heads(transformers) -> None:
    """Activation matching on token ids recovers a permuted copy whose query heads were also
    reordered inside their groups (the rotary table pins the Q/K dims)."""
    model = _llama_gqa(transformers)
    spec = discover_spec(model)
    state = model.state()
    target = model.with_state(permute_state(state, spec, random_permutations(spec, 3),
                                            random_copy_orders(spec, 3)))
    perms, orders = activation_matching(model.module, target.module, spec,
                                        model.example_input(32, seed=2))
    assert set(orders) == set(random_copy_orders(spec, 3))
    realigned = permute_state(target.state(), spec, perms, orders)
    assert all(torch.allclose(realigned[k], v, atol=1e-6) for k, v in state.items())


@pytest.mark.parametrize("align", ["chain", "local"])
@pytest.mark.parametrize("layer", ["q_proj", "o_proj"])
def test_llama_grouped_query_layer_steps_realign(transformers, layer: str, align: str) -> None:
    """A chain or local layer step from a permuted copy (query heads reordered in their groups
    too) maps the layer whose axis repeats each key/value head's dims (Q's rows, O's columns)
    back onto the base's exactly."""
    model = _llama_gqa(transformers)
    spec = discover_spec(model)
    state = model.state()
    donor = model.with_state(permute_state(state, spec, random_permutations(spec, 3),
                                           random_copy_orders(spec, 3)))
    name = f"model.model.layers.0.self_attn.{layer}"
    cache = ModelCache({"base": model, "target": donor}, specs={"base": spec, "target": spec})
    series = curve_series(cache, "base", "target", align=align, layers=[(name, name)])
    key = f"{name}.weight"
    assert torch.allclose(series.aligned(1.0)[key], state[key], atol=1e-6)
    assert not torch.allclose(series.naive(1.0)[key], state[key], atol=1e-3)


def test_llama_rotary_pins_query_key_dims_only(transformers) -> None:
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=4,
                                   intermediate_size=24, max_position_embeddings=16)
    model = loaded(Logits(_quiet(lambda: transformers.LlamaForCausalLM(cfg))), (6,), torch.int64, 40)
    spec = check(model, ["P_heads_model.model.layers.0.self_attn.q_proj",
                         "P_heads_model.model.layers.0.self_attn.v_proj"], min_free=4,
                 within_heads=1)
    attn = "model.model.layers.0.self_attn"
    qk, vo = _assert_qk_vo(spec, f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj",
                           f"{attn}.o_proj", 4, 4)
    assert not qk.inner_free and vo.inner_free
    # the op that pins them, and where: the rotary table multiplies Q and K in the attention
    (_, why), = qk.parts
    assert "rotary" in why and "aten.mul" in why and attn in why


def test_vit_heads_free(transformers) -> None:
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                                 num_labels=3)
    model = loaded(Logits(_quiet(lambda: transformers.ViTForImageClassification(cfg)),
                          "pixel_values"), (1, 8, 8))
    spec = check(model, ["P_stream_model.vit.embeddings.patch_embeddings.projection"], min_free=3,
                 within_heads=2)
    attn = "model.vit.layers.0.attention"
    _assert_qk_vo(spec, f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj", f"{attn}.o_proj",
                  2, 8)


def test_activation_matching_keeps_heads_whole_and_recovers_their_dims() -> None:
    model = loaded(im.TinyTransformer(), (4, 5))
    spec = discover_spec(model)
    state = model.state()
    planted = random_permutations(spec, 5)
    target = model.with_state(permute_state(state, spec, planted))
    perms, orders = activation_matching(model.module, target.module, spec,
                                        model.example_input(16, seed=2))
    assert orders == {}  # no grouped-query attention here
    group = spec.head_groups["P_heads_attn.qkv"]
    assert head_permutation_of(perms["P_heads_attn.qkv"], group.dim) is not None
    assert head_permutation_of(perms["P_heads_attn.proj"], group.dim) is not None
    realigned = permute_state(target.state(), spec, perms)
    assert all(torch.allclose(realigned[k], v, atol=1e-6) for k, v in state.items())
    # an unrelated model: a unit-by-unit LAP would mix dims of different heads
    torch.manual_seed(7)
    other = loaded(im.TinyTransformer(), (4, 5))
    perms, _ = activation_matching(model.module, other.module, spec,
                                   model.example_input(16, seed=2))
    assert all(head_permutation_of(perms[s], group.dim) is not None
               for s in ("P_heads_attn.qkv", "P_heads_attn.proj"))


@pytest.mark.parametrize("layer", ["k", "head"])
def test_chain_over_grouped_query_layers_of_another_group_size_falls_back(layer: str) -> None:
    """A chain whose prefix holds a layer with another grouped-query layout (4 query heads
    per 2 key/value heads against 6 per 2: Q's rows repeat each key/value head's dims 2 vs 3
    times) is not one chain: the step says so and uses local alignment, instead of failing in
    weight matching on 'q.weight axis 0: 1 vs 1 features per unit' (chain_pairs compared
    only Axis.block, weight matching the whole Axis.layout)."""
    base = loaded(im.GroupedQueryAttention(heads=4, kv_heads=2), (4, 5))
    donor = loaded(im.GroupedQueryAttention(heads=6, kv_heads=2), (4, 5))
    cache = ModelCache({"base": base, "target": donor})
    series = curve_series(cache, "base", "target", align="chain", layers=[(layer, layer)])
    assert series.report["align"] == "local"
    assert "chain alignment not applicable" in series.report["fallback_reason"]
    assert "base q / target q" in series.report["fallback_reason"]


def test_output_projection_of_another_group_size_is_refused_for_its_layout() -> None:
    """O's columns repeat each key/value head's dims once per query head: 2 vs 3 query heads
    per key/value head cannot line up, and the refusal says so, not that 'spatial sizes
    differ' (the pre-flight counts a head's dims and their copies as the input block)."""
    from mal_desktop.core.errors import PlanError

    base = loaded(im.GroupedQueryAttention(heads=4, kv_heads=2), (4, 5))
    donor = loaded(im.GroupedQueryAttention(heads=6, kv_heads=2), (4, 5))
    cache = ModelCache({"base": base, "target": donor})
    with pytest.raises(PlanError) as err:
        curve_series(cache, "base", "target", align="local", layers=[("o", "o")])
    assert "spatial" not in str(err.value) and "input layouts differ" in str(err.value)


class TiedEmbeddingLM(nn.Module):
    """An embedding tied to the output head (``head.weight = embed.weight``), a residual MLP
    between: the state names the tied tensor twice."""

    def __init__(self, vocab: int = 40, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.fc = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        h = h + torch.relu(self.fc(h))
        return self.head(h)[:, -1]


def test_tied_weights_the_self_test_can_see_through() -> None:
    """The residual stream's first weight is the tied embedding: a broken permutation of it
    must reach the module under both names, else the probe looks blind to the space (the
    language demo zoo's stream was reported "not seen by the probe")."""
    model = loaded(TiedEmbeddingLM(), (6,), torch.long, 40)
    spec = discover_spec(model, cache=False)
    report = self_test(model, spec)
    assert report.status == "passed" and report.powerless == (), report
    stream = next(s for s in report.per_space if any(
        key == "embed.weight" for key, _ in spec.tensors_on(s)))
    assert stream not in report.powerless
    # and so does the check of a stored spec, on rescaled weights (drawn per name, then tied)
    assert self_test(model, spec, seed=987, jitter=True).status == "passed"


class TiedGramLM(nn.Module):
    """logits = E[ids] E^T with the head tied to the embedding: a permutation of the width moves
    both factors and changes nothing, so the probe cannot see the width's space."""

    def __init__(self, vocab: int = 40, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))[:, -1]


@pytest.mark.parametrize("jitter", [False, True])
def test_a_tied_space_the_probe_cannot_see_has_no_power(jitter: bool) -> None:
    """Rescaling each name of a tied tensor on its own made the broken state differ from the
    reference by the rescaling: the blind space was reported as seen, the spec as passed."""
    model = loaded(TiedGramLM(), (6,), torch.long, 40)
    spec = discover_spec(model, cache=False)
    report = self_test(model, spec, seed=987, jitter=jitter)
    assert report.status == "no power" and report.powerless, report
