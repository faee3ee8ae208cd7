"""Models whose layer weights are transposed or tiled, at chosen widths, for layer-step tests.

GPT-2 Conv1D (weight stored (in, out)), a fused QKV projection (its output axis is 3 tiles of
heads x head dims) and LSTM / GRU classifiers (gate-stacked rows: tiles 4 / 3). Importable as
"layout_arch:<factory>" (--arch) with tests/core on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import idiom_modules as im  # noqa: E402

SEQ, FEATURES, CLASSES = 4, 5, 3


class Conv1DNet(nn.Module):
    """GPT-2's MLP block on a residual stream: two Conv1D layers of width ``hidden``; with
    ``linear`` the same network written with nn.Linear (weights stored (out, in))."""

    def __init__(self, hidden: int = 12, dim: int = 8, linear: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(FEATURES, dim)
        if linear:
            self.c_fc, self.c_proj = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        else:
            self.c_fc, self.c_proj = im.Conv1D(hidden, dim), im.Conv1D(dim, hidden)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.c_proj(F.gelu(self.c_fc(h)))
        return self.head(h.mean(1))


class QKVNet(nn.Module):
    """Attention with a fused QKV projection of ``heads`` heads of ``head_dim`` dims."""

    def __init__(self, heads: int = 2, head_dim: int = 4, dim: int = 8) -> None:
        super().__init__()
        self.h, self.d = heads, head_dim
        self.inp = nn.Linear(FEATURES, dim)
        self.ln = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        b, t, _ = h.shape
        q, k, v = self.qkv(self.ln(h)).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.h, self.d).transpose(1, 2) for z in (q, k, v))
        att = ((q @ k.transpose(-2, -1)) * self.d ** -0.5).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, self.h * self.d)
        return self.head((h + self.proj(y)).mean(1))


class RNNNet(nn.Module):
    """A one-layer LSTM or GRU of ``hidden`` units over the sequence, its last step classified."""

    def __init__(self, cell: str = "lstm", hidden: int = 6) -> None:
        super().__init__()
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](FEATURES, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def make_conv1d() -> nn.Module:
    return Conv1DNet()


def make_qkv() -> nn.Module:
    return QKVNet()


def make_lstm() -> nn.Module:
    return RNNNet("lstm")


for _factory in (make_conv1d, make_qkv, make_lstm):
    _factory.input_shape = (SEQ, FEATURES)  # type: ignore[attr-defined]
