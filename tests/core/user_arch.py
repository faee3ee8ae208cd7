"""User architectures for the model file tests, imported as "user_arch:<factory>".

They stand in for a user's own code named with --arch module:factory.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyMLP(nn.Module):
    """Flat 12-feature input, one hidden layer, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def make_mlp() -> nn.Module:
    """Input shape inferred from the first Linear: (12,)."""
    return TinyMLP()


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def make_cnn() -> nn.Module:
    """A convolution first: the input shape is declared on the factory."""
    return TinyCNN()


make_cnn.input_shape = (1, 6, 6)  # type: ignore[attr-defined]


def make_cnn_without_shape() -> nn.Module:
    """A convolution first and no declared input shape: cannot be inferred."""
    return TinyCNN()


class Tied(nn.Module):
    """Two state keys sharing one tensor (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def make_tied() -> nn.Module:
    return Tied()


def make_broken() -> nn.Module:
    raise RuntimeError("factory exploded")


def make_not_a_module() -> int:
    return 3


def make_digits_mlp() -> nn.Module:
    """64 digit pixels -> 16 hidden -> 10 classes (for curves on the digits dataset)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


class LogitsAndFeatures(nn.Module):
    """64 digit pixels -> 16 -> 12 hidden -> 10 classes; returns (logits, features), the way
    many research models return their embedding next to the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 12)
        self.head = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.fc2(torch.relu(self.fc1(torch.flatten(x, 1)))))
        return self.head(features), features


def make_logits_and_features() -> nn.Module:
    return LogitsAndFeatures()
