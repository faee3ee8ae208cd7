"""Planted generalized permutations for alignment tests: which base unit each target unit copies."""

from __future__ import annotations

import torch


def planted_sources(m: int, n: int, gen: torch.Generator) -> list[int]:
    """Per target unit, the base unit it copies (-1: a new unit the base does not have).

    Base wider (m >= n): the target holds a random subset of the base units in random order.
    Base narrower: every base unit appears at a random position among n, the rest are new.
    """
    if m >= n:
        return torch.randperm(m, generator=gen)[:n].tolist()
    source = [-1] * n
    for base_unit, pos in enumerate(torch.randperm(n, generator=gen)[:m].tolist()):
        source[pos] = base_unit
    return source
