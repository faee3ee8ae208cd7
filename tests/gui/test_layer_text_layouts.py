"""The layer tree's tooltip for a weight layer says where its units live as the weight is
stored: GPT-2's Conv1D keeps its outputs on axis 1, a fused QKV stacks 3 copies of its heads,
an LSTM 4 gate rows per hidden unit."""

from __future__ import annotations

from mal_desktop.core.graph.spec import Axis, Layer
from mal_desktop.gui.models.layer_text import _layer_axes_text


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
