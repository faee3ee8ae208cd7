"""Architecture families of the demo zoo, in a name-keyed registry.

Each family builds an ``nn.Module`` from a JSON-able config. Every config carries
``input_shape`` (per sample, e.g. [1, 8, 8]) and ``num_classes``; the rest is family-specific.
A model saved by mal_desktop stores (family, config) in its metadata so it can be rebuilt.
The modules use only operations the permutation-space discovery understands (linear, conv,
batch/layer norm, pooling, flatten, residual add, transpose), so every zoo model is alignable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import MalError


@dataclass(frozen=True)
class Family:
    """A registered architecture family."""

    name: str
    build: Callable[[dict[str, Any]], nn.Module]
    defaults: dict[str, Any]
    description: str


FAMILIES: dict[str, Family] = {}


Builder = Callable[[dict[str, Any]], nn.Module]


def register_family(name: str, defaults: dict[str, Any],
                    description: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(config) -> nn.Module`` under ``name``.

    defaults: the family's config defaults (``full_config`` updates them with a model's own
    config, which always carries ``input_shape`` and ``num_classes``). description: one line.
    Models saved with ``arch = {"kind": "family", "family": name, "config": ...}`` are rebuilt
    through ``build`` when loaded. Returns the decorator, which returns ``build`` unchanged.
    """

    def wrap(build: Builder) -> Builder:
        FAMILIES[name] = Family(name, build, dict(defaults), description)
        return build

    return wrap


def full_config(family: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The family's defaults updated with ``config``."""
    if family not in FAMILIES:
        raise MalError(f"unknown architecture family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    merged = dict(FAMILIES[family].defaults)
    merged.update(config or {})
    return merged


def build_model(family: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build a fresh (randomly initialised) model of ``family``; returns it in eval mode."""
    model = FAMILIES[family].build(full_config(family, config)) if family in FAMILIES else None
    if model is None:
        full_config(family)  # raises the readable error
    return model.eval()


def _features(shape: list[int]) -> int:
    return math.prod(int(s) for s in shape)


class MLP(nn.Module):
    """Flatten, then Linear+ReLU per hidden width, then a linear head."""

    def __init__(self, input_shape: list[int], num_classes: int, widths: list[int]) -> None:
        super().__init__()
        dims = [_features(input_shape), *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


@register_family("mlp", {"input_shape": [1, 8, 8], "num_classes": 10, "widths": [64, 64]},
                 "Multi-layer perceptron (Linear + ReLU)")
def _build_mlp(c: dict[str, Any]) -> nn.Module:
    return MLP(c["input_shape"], c["num_classes"], list(c["widths"]))


class ConvBlock(nn.Sequential):
    """conv 3x3 (same padding) + BatchNorm + ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


class CNN(nn.Module):
    """Two conv blocks with max pooling, flatten, a hidden linear layer and a head."""

    def __init__(self, input_shape: list[int], num_classes: int, channels: list[int], hidden: int,
                 kernel: int = 3) -> None:
        super().__init__()
        c_in, h, w = input_shape
        blocks: list[nn.Module] = []
        for c in channels:
            blocks += [ConvBlock(c_in, c, kernel), nn.MaxPool2d(2)]
            c_in, h, w = c, h // 2, w // 2
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in * h * w, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.head(torch.relu(self.fc(x)))


@register_family("cnn", {"input_shape": [1, 8, 8], "num_classes": 10, "channels": [16, 32],
                         "hidden": 64, "kernel": 3},
                 "Small CNN: conv-BN-ReLU-pool x2, flatten, linear")
def _build_cnn(c: dict[str, Any]) -> nn.Module:
    return CNN(c["input_shape"], c["num_classes"], list(c["channels"]), int(c["hidden"]),
               int(c.get("kernel", 3)))


class VGG(nn.Module):
    """VGG-style stages of stacked 3x3 convs, max pooling between stages, global average pool."""

    def __init__(self, input_shape: list[int], num_classes: int, stages: list[list[int]]) -> None:
        super().__init__()
        c_in = input_shape[0]
        blocks: list[nn.Module] = []
        for i, stage in enumerate(stages):
            for c in stage:
                blocks.append(ConvBlock(c_in, c))
                c_in = c
            if i < len(stages) - 1:
                blocks.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))
        return self.head(x)


@register_family("vgg", {"input_shape": [1, 8, 8], "num_classes": 10,
                         "stages": [[16, 16], [32, 32]]},
                 "VGG-style: stacked 3x3 conv-BN-ReLU stages, global average pool")
def _build_vgg(c: dict[str, Any]) -> nn.Module:
    return VGG(c["input_shape"], c["num_classes"], [list(s) for s in c["stages"]])


class BasicBlock(nn.Module):
    """Residual block: conv-BN-ReLU-conv-BN plus the identity, then ReLU (one shared stream)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class ResNet(nn.Module):
    """ResNet-style: stem conv, residual blocks on a shared stream, global average pool, head."""

    def __init__(self, input_shape: list[int], num_classes: int, width: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.blocks = nn.Sequential(*(BasicBlock(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = self.blocks(x).mean(dim=(2, 3))
        return self.head(x)


@register_family("resnet", {"input_shape": [1, 8, 8], "num_classes": 10, "width": 16, "blocks": 2},
                 "ResNet-style: residual blocks sharing one stream")
def _build_resnet(c: dict[str, Any]) -> nn.Module:
    return ResNet(c["input_shape"], c["num_classes"], int(c["width"]), int(c["blocks"]))


class MixerBlock(nn.Module):
    """MLP-Mixer block: LayerNorm + token-mixing MLP, LayerNorm + channel-mixing MLP, residuals."""

    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_fc1 = nn.Linear(tokens, token_hidden)
        self.token_fc2 = nn.Linear(token_hidden, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_fc1 = nn.Linear(dim, channel_hidden)
        self.channel_fc2 = nn.Linear(channel_hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, tokens, dim)
        y = self.norm1(x).transpose(1, 2)
        y = self.token_fc2(torch.nn.functional.gelu(self.token_fc1(y))).transpose(1, 2)
        x = x + y
        y = self.channel_fc2(torch.nn.functional.gelu(self.channel_fc1(self.norm2(x))))
        return x + y


class Mixer(nn.Module):
    """Tiny MLP-Mixer: patch embedding (strided conv), mixer blocks, LayerNorm, token mean, head."""

    def __init__(self, input_shape: list[int], num_classes: int, patch: int, dim: int,
                 depth: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        c, h, w = input_shape
        tokens = (h // patch) * (w // patch)
        self.patch_embed = nn.Conv2d(c, dim, patch, stride=patch)
        self.blocks = nn.Sequential(*(MixerBlock(tokens, dim, token_hidden, channel_hidden)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.patch_embed(x), 2).transpose(1, 2)  # (batch, tokens, dim)
        x = self.norm(self.blocks(x)).mean(dim=1)
        return self.head(x)


@register_family("mixer", {"input_shape": [1, 8, 8], "num_classes": 10, "patch": 2, "dim": 32,
                           "depth": 2, "token_hidden": 32, "channel_hidden": 64},
                 "Tiny MLP-Mixer: LayerNorm'd token- and channel-mixing MLPs with residuals")
def _build_mixer(c: dict[str, Any]) -> nn.Module:
    return Mixer(c["input_shape"], c["num_classes"], int(c["patch"]), int(c["dim"]),
                 int(c["depth"]), int(c["token_hidden"]), int(c["channel_hidden"]))
