"""What a model reads: the dtype of its input and, for token ids, how many ids it knows.

A program exported from a language model takes integer token ids; a probe batch of random floats
would crash it, and ids beyond the embedding's rows would index out of range. The dtype comes
from the program's input placeholder; the id range is the number of rows of the smallest
embedding table the input reaches through shape-only ops.
"""

from __future__ import annotations

from typing import Any

import torch

# ops that carry ids through unchanged in value (views, copies, selections)
_PASS_THROUGH = {"view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "flatten", "expand",
                 "clone", "contiguous", "to", "_to_copy", "alias", "slice", "select", "detach",
                 "transpose", "permute", "lift_fresh_copy"}


def _user_inputs(program: Any) -> list[Any]:
    names = set(program.graph_signature.user_inputs)
    return [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]


def program_input_dtype(program: Any) -> torch.dtype | None:
    """The dtype of the program's first tensor input, or None when it has none."""
    for node in _user_inputs(program):
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return val.dtype
    return None


def program_id_range(program: Any) -> int | None:
    """For integer inputs: ids must stay below this (the smallest embedding reached), or None."""
    inputs = _user_inputs(program)
    if not inputs:
        return None
    frontier, seen, rows = [inputs[0]], set(), []
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        for user in node.users:
            name = str(user.target).split(".")[1] if str(user.target).startswith("aten.") else ""
            if name == "embedding" and len(user.args) > 1 and user.args[1] is node:
                weight = user.args[0].meta.get("val")
                if isinstance(weight, torch.Tensor):
                    rows.append(int(weight.shape[0]))
            elif name in _PASS_THROUGH:
                frontier.append(user)
    return min(rows) if rows else None


def random_input(shape: tuple[int, ...], dtype: torch.dtype, high: int | None,
                 generator: torch.Generator) -> torch.Tensor:
    """A random probe tensor: normal floats, or integers in [0, high) (default 2) for ids."""
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=generator).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    return torch.randint(0, max(1, high or 2), shape, generator=generator).to(dtype)
