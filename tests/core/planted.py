"""Planted generalized permutations for alignment tests: which base unit each target unit copies.

Spaces of attention heads (``PermutationSpec.head_groups``) get what they allow: whole heads, one
head map per attention, and inside each head a permutation of its dims shared by the segments and
spaces that share it (Q with K, V with O), none where the dims are pinned.
"""

from __future__ import annotations

import torch

from mal_desktop.core.graph.spec import PermutationSpec


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


def planted_space_sources(base_spec: PermutationSpec, target_spec: PermutationSpec,
                          gen: torch.Generator) -> dict[str, list[int]]:
    """Per space of the target, per target unit the base unit it copies (-1: new): the identity
    for fixed spaces, :func:`planted_sources` for plain ones, whole heads for attention heads."""
    sources: dict[str, list[int]] = {}
    heads: dict[str, list[int]] = {}
    inner: dict[str, list[list[int]]] = {}
    for sid, space in target_spec.spaces.items():
        m = base_spec.spaces[sid].size
        group = target_spec.head_groups.get(sid)
        if space.fixed:
            sources[sid] = list(range(space.size))
            continue
        if group is None or group.dim == 1:
            sources[sid] = planted_sources(m, space.size, gen)
            continue
        d, segments = group.dim, len(group.parts)
        hb = m // (d * segments)
        head_map = heads.setdefault(group.family, planted_sources(hb, group.heads, gen))
        src = []
        for k, (name, why) in enumerate(group.parts):
            perms = inner.setdefault(name, [list(range(d)) if why else
                                            torch.randperm(d, generator=gen).tolist()
                                            for _ in range(group.heads)])
            for j, i in enumerate(head_map):  # target head j copies base head i
                src += [-1 if i < 0 else k * hb * d + i * d + perms[j][r] for r in range(d)]
        sources[sid] = src
    return sources
