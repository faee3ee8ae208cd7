"""User architectures for tests/core/test_meta_loading.py (imported by --arch module:factory)."""
import torch
from torch import nn


class Rotaryish(nn.Module):
    """A non-persistent buffer computed in __init__ (like a rotary embedding's frequencies) and
    a tied output layer (like tie_word_embeddings)."""

    input_shape = (6,)
    num_classes = 6

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.register_buffer("freq", torch.arange(8, dtype=torch.float32) / 8, persistent=False)
        self.mid = nn.Linear(8, 8)
        self.out = nn.Linear(8, 6, bias=False)
        self.back = nn.Linear(6, 8, bias=False)
        self.back.weight = self.out.weight  # tied: one tensor, used transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x)) * (1 + self.freq)
        return self.out(torch.relu(self.mid(h)))


def rotaryish() -> nn.Module:
    return Rotaryish()
