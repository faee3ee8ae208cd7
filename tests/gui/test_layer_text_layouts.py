"""The layer tree's tooltip for a weight layer says where its units live as the weight is
stored: GPT-2's Conv1D keeps its outputs on axis 1, a fused QKV stacks 3 copies of its heads,
an LSTM 4 gate rows per hidden unit; on attention heads it says heads x dims and which
layers the dims inside a head move with, or why they are pinned."""

from __future__ import annotations

from types import SimpleNamespace

from mal_desktop.core.graph.spec import Axis, HeadGroup, Layer, PermutationSpec, Space
from mal_desktop.core.graph.tree import LayerNode
from mal_desktop.gui.models.layer_text import (COL_NAME, COL_SPACE, COL_STATS, LayerText,
                                               _layer_axes_text)


def test_conv1d_qkv_and_lstm_tooltips_follow_the_stored_layout() -> None:
    conv1d = Layer("c_fc", "linear", "c_fc.weight", "c_fc.bias", (), Axis("P_c_fc"),
                   Axis("P_stream"), 1, transposed=True)
    text = _layer_axes_text(conv1d)
    assert "Output units (axis 1) live in P_c_fc" in text
    assert "input units (axis 0) in P_stream" in text and "stored (in, out)" in text
    qkv = Layer("qkv", "linear", "qkv.weight", "qkv.bias", (), Axis("P_heads", 4, 3),
                Axis("P_stream"), 1)
    assert "(axis 0) live in P_heads, 3 stacked copies, 4 rows per unit;" in _layer_axes_text(qkv)
    lstm = Layer("rnn", "lstm", "rnn.weight_ih_l0", "rnn.bias_ih_l0", (), Axis("P_rnn", 1, 4),
                 Axis("P_input"), 0)
    text = _layer_axes_text(lstm)
    assert "P_rnn, 4 gates per unit" in text and "recurrent weights" in text


def _attention_spec(qk_pinned: str = "") -> PermutationSpec:
    """q, k, v, o projections of one attention of 4 heads x 16 dims (as discovery records
    them: Q/K one space, V/O another, one family)."""
    stream = Axis("P_stream")
    layers = [Layer(f"attn.{n}", "linear", f"attn.{n}.weight", None, (), Axis(space), stream, i)
              for i, (n, space) in enumerate((("q", "P_qk"), ("k", "P_qk"), ("v", "P_vo")))]
    layers.append(Layer("attn.o", "linear", "attn.o.weight", None, (), stream, Axis("P_vo"), 3))
    spaces = {s: Space(s, 64) for s in ("P_qk", "P_vo")} | {"P_stream": Space("P_stream", 8)}
    groups = {"P_qk": HeadGroup("P_qk", 4, 16, (("P_qk:0", qk_pinned),)),
              "P_vo": HeadGroup("P_qk", 4, 16, (("P_qk:1", ""),))}
    return PermutationSpec(spaces, {}, layers, head_groups=groups)


def test_tooltips_show_attention_heads_and_which_dims_move_together() -> None:
    rotary = "combined with a constant that varies along this axis (rotary)"
    text = LayerText(_attention_spec(rotary), "zoo", "m")
    spec = text.spec
    (q,), (v,), (o,) = (text.heads_text(spec.layer(f"attn.{n}")) for n in "qvo")
    assert q == ("Output units: 4 heads \u00d7 16 dims (heads move with P_vo); dims inside a "
                 f"head pinned (Q/K, with k): {rotary}")
    assert v == ("Output units: 4 heads \u00d7 16 dims (heads move with P_qk); dims inside a "
                 "head move with o (V/O)")
    assert o.startswith("Input units: 4 heads \u00d7 16 dims") and o.endswith("move with v (V/O)")
    # free Q/K dims: they move with the other projection scored against
    (k,) = LayerText(_attention_spec(), "zoo", "m").heads_text(spec.layer("attn.k"))
    assert k.endswith("dims inside a head move with q (Q/K)")
    # the tooltips of the row's name and space columns carry it; a plain layer has none
    node = LayerNode("attn.v", "linear", (), (), 0, spec.layer("attn.v"))
    row = SimpleNamespace(node=node, tensor=None, name="v", repeat_count=0, repeat_first="")
    for col in (COL_NAME, COL_SPACE):
        assert v in text.tooltip(row, col, None, {}).splitlines()
    assert v not in text.tooltip(row, COL_STATS, None, {})
    # grouped-query attention: the query projection writes each key/value head's dims twice
    gqa = Layer("attn.q", "linear", "attn.q.weight", None, (), Axis("P_qk", repeat=2, span=16),
                Axis("P_stream"), 0)
    (line,) = text.heads_text(gqa)
    assert line.startswith("Output units: 4 heads \u00d7 16 dims, each written 2 times (once "
                           "per query head reading it; the query heads of a group may be "
                           "reordered among themselves) (heads move with P_vo)")
    assert text.heads_text(Layer("fc", "linear", "fc.weight", None, (), Axis("P_stream"),
                                 Axis("P_stream"), 9)) == []


def test_tooltips_of_a_fused_projection_and_of_heads_moving_as_blocks() -> None:
    stream = Axis("P_stream")
    gqa = "grouped-query attention (query heads sharing a key/value head ...)"
    spec = PermutationSpec(
        {"P_qkv": Space("P_qkv", 24), "P_proj": Space("P_proj", 8), "P_h": Space("P_h", 2),
         "P_stream": Space("P_stream", 8)},
        {}, [Layer("qkv", "linear", "qkv.weight", None, (), Axis("P_qkv"), stream, 0),
             Layer("proj", "linear", "proj.weight", None, (), stream, Axis("P_proj"), 1),
             Layer("q", "linear", "q.weight", None, (), Axis("P_h", 8), stream, 2)],
        head_groups={"P_qkv": HeadGroup("P_qkv", 2, 4, (("P_qkv:0", ""), ("P_qkv:0", ""),
                                                         ("P_qkv:1", ""))),
                     "P_proj": HeadGroup("P_qkv", 2, 4, (("P_qkv:1", ""),)),
                     "P_h": HeadGroup("P_h", 2, 1, inner_reason=gqa)})
    text = LayerText(spec, "base", "m")
    (qkv,) = text.heads_text(spec.layer("qkv"))
    assert qkv == ("Output units: 2 heads \u00d7 4 dims (heads move with P_proj); segments 1 and 2: dims inside a head "
                   "move together (Q/K); segment 3: dims inside a head move with proj (V/O)")
    (q,) = text.heads_text(spec.layer("q"))
    assert q == (f"Output units: 2 heads moving as blocks (8 rows each); dims inside a head "
                 f"pinned: {gqa}")
