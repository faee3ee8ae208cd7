"""Modules on the meta device: structure without memory, to which a state is attached later.

Building a large model for real allocates and randomly initialises every weight, only for
``load_state_dict`` to overwrite it with a copy of the file's tensors: twice the model in memory
and seconds of random numbers. Built on the meta device instead, a module holds shapes only; the
file's (memory-mapped) tensors are then attached with ``load_state_dict(assign=True)``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def _tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer under every name it has (tied ones several times)."""
    yield from module.named_parameters(remove_duplicate=False)
    yield from module.named_buffers(remove_duplicate=False)


def meta_twin(module: nn.Module) -> nn.Module:
    """A structural copy of ``module`` whose parameters and buffers live on the meta device.

    Nothing is allocated or copied (``copy.deepcopy`` would copy every tensor); tied weights stay
    tied (one meta tensor per original tensor). The twin is what a state is attached to with
    ``load_state_dict(assign=True)``, and what discovery exports without touching any weight.
    """
    memo: dict[int, Any] = {}
    for _, t in _tensors(module):
        if id(t) not in memo:
            # torch.empty, not empty_like: the latter imports sympy (a quarter second) on meta
            twin = torch.empty(t.shape, dtype=t.dtype, device="meta")
            if isinstance(t, nn.Parameter):
                twin = nn.Parameter(twin, requires_grad=t.requires_grad)
            memo[id(t)] = twin
    with quiet_torch_internals():
        return copy.deepcopy(module, memo)


@contextmanager
def quiet_torch_internals() -> Iterator[None]:
    """Silence warnings torch raises about its own internals while we copy or export a module.

    A program's module holds torch's pytree specs, and copying or decomposing one trips torch's
    ``LeafSpec`` deprecation shim (torch 2.13); exporting an ``nn.LSTM`` warns that its
    ``_flat_weights`` "must be registered as buffers". Neither is about the user's model, and
    a user of ``mal inspect`` can do nothing about them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*_flat_weights.*register_buffer",
                                category=UserWarning)
        yield


def tie_groups(module: nn.Module) -> list[list[str]]:
    """Names that share one tensor (tied weights, e.g. ``lm_head.weight`` and the embeddings),
    in groups of two or more, in module order: the first is the name transformers keeps."""
    groups: dict[int, list[str]] = {}
    for name, t in _tensors(module):
        groups.setdefault(id(t), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def retie(module: nn.Module, groups: list[list[str]]) -> None:
    """Make each group of names (see :func:`tie_groups`) share its first name's tensor again:
    ``load_state_dict(assign=True)`` gives every name its own tensor."""
    current = dict(_tensors(module))
    for first, *others in groups:
        for name in others:
            owner, _, attr = name.rpartition(".")
            sub = module.get_submodule(owner)
            table = sub._parameters if attr in sub._parameters else sub._buffers
            table[attr] = current[first]


def meta_leftovers(module: nn.Module) -> list[str]:
    """Names of tensors still on the meta device (non-persistent buffers no state carries)."""
    return [name for name, t in module.named_buffers(remove_duplicate=False) if t.is_meta] + \
        [name for name, t in module.named_parameters(remove_duplicate=False) if t.is_meta]


@contextmanager
def params_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device and their buffers for real.

    ``torch.device("meta")`` puts buffers on meta too, and a non-persistent buffer (a rotary
    embedding's frequencies, computed in ``__init__``) is in no state dict, so nothing could
    fill it afterwards. Here every parameter moves to meta as it is registered (one at a time:
    never more than one uninitialised parameter is allocated) and its initialisation then runs
    on meta, which costs nothing; buffers are computed as usual. Not thread-safe: it patches
    ``nn.Module.register_parameter`` while active (as accelerate's ``init_empty_weights`` does).
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
