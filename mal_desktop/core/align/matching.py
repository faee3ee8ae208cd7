"""Weight matching built on the coordinate descent of descent.py: whole-model matching, chain
alignment, and mapping target tensors by the matches found.

Whole-model matching pairs every free space of a shared spec with itself; chain alignment pairs
the hidden spaces of a same-depth prefix of two specs (mal_method.md sec. 4). Running statistics
of norms are mapped by :func:`apply_matches` but left out of the cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from ..errors import AlignmentError
from ..graph.recurrent import recurrent_riders
from ..graph.spec import Layer, PermutationSpec, permute_state
from ..progress import CancelToken, Job
from .descent import MatchResult, axes_of, check_same_layout, is_statistic, match_spaces
from .generalized import Match, kernel_text, transform_tensor

# Runs of coordinate descent for whole-model weight matching (the first from the identity, the
# others from random starts, each in its own space order); the highest J is kept. A single run
# can settle in a poor local optimum: on two seeds of a small MLP the run from the identity ends
# a few percent of J below the best of four (tests/core/test_matching.py).
WEIGHT_RESTARTS = 4

__all__ = ["MatchResult", "match_spaces", "is_statistic", "apply_matches", "weight_matching",
           "whole_model_match", "default_tensor_keys", "result_permutations",
           "result_copy_orders", "aligned_target", "chain_pairs", "chain_layers",
           "WEIGHT_RESTARTS"]


def apply_matches(
    target_state: Mapping[str, torch.Tensor],
    target_spec: PermutationSpec,
    base_spec: PermutationSpec,
    tensor_pairs: Iterable[tuple[str, str]],
    matches: Mapping[str, Match],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Map paired target tensors into the base's shapes.

    Parameters:
        target_state, target_spec, base_spec: the two models' state and specs.
        tensor_pairs: (base key, target key) pairs.
        matches: base space -> Match (e.g. ``MatchResult.matches``); a base space without a match
            keeps the identity, which needs equal sizes.
    Returns:
        base key -> (tensor in base shape, mask True where the entry came from the target), on
        the target tensor's device and dtype.
    Raises:
        AlignmentError: a missing tensor, or an axis whose sizes disagree with its match.
    """
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for bk, tk in tensor_pairs:
        if tk not in target_state:
            raise AlignmentError(f"target model has no tensor {tk!r}")
        t = target_state[tk]
        b_axes = axes_of(base_spec, bk, t.ndim)
        t_axes = axes_of(target_spec, tk, t.ndim)
        spec: dict[int, tuple[Match, int]] = {}
        for dim, (ba, ta) in enumerate(zip(b_axes, t_axes)):
            if ba is None:
                continue
            if ta is not None:
                check_same_layout(bk, dim, ba, ta)
            match = matches.get(ba.space)
            if match is None:
                units = t.shape[dim] // ba.entries
                if units != base_spec.spaces[ba.space].size:
                    raise AlignmentError(f"{bk} axis {dim}: space {ba.space!r} has no match and "
                                         f"sizes differ: base {base_spec.spaces[ba.space].size}, "
                                         f"target {units}")
                match = Match.identity(units, units)
            spec[dim] = (match, ba.layout)
        try:
            out[bk] = transform_tensor(t, spec)
        except AlignmentError as exc:
            raise AlignmentError(f"{bk} <- {tk}: {exc}") from exc
    return out


def default_tensor_keys(spec: PermutationSpec, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys for whole-model matching: floating tensors with a permutable axis, no statistics."""
    return [key for key, axes in spec.axes.items()
            if key in state and state[key].is_floating_point() and not is_statistic(key)
            and any(axis is not None for axis in axes)]


def weight_matching(
    base_state: Mapping[str, torch.Tensor],
    target_state: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    *,
    keys: Sequence[str] | None = None,
    max_iter: int = 100,
    seed: int = 0,
    restarts: int = WEIGHT_RESTARTS,
    cancel: CancelToken | None = None,
) -> Job[dict[str, torch.Tensor]]:
    """Job: classic whole-model weight matching of two models sharing one ``spec``.

    Every free space is square and paired with itself; the tensors are ``keys`` (default
    :func:`default_tensor_keys`). ``restarts`` seeded runs of :func:`match_spaces`; the one
    with the highest J is kept, never one below the identity's J.

    Returns:
        space -> permutation p for every free space, usable as
        ``permute_state(target_state, spec, perms)`` to bring the target into the base's basin
        where no grouped-query attention's copies move (otherwise use
        :func:`whole_model_match` and :func:`aligned_target`).
    Raises:
        AlignmentError / Cancelled: as :func:`match_spaces`.
    """
    result = yield from whole_model_match(base_state, target_state, spec, keys=keys,
                                          max_iter=max_iter, seed=seed, restarts=restarts,
                                          cancel=cancel)
    return result_permutations(result)


def whole_model_match(
    base_state: Mapping[str, torch.Tensor],
    target_state: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    *,
    keys: Sequence[str] | None = None,
    max_iter: int = 100,
    seed: int = 0,
    restarts: int = WEIGHT_RESTARTS,
    cancel: CancelToken | None = None,
) -> Job[MatchResult]:
    """Job: :func:`weight_matching`, returning the whole :class:`MatchResult` (the kept run,
    the runs made, the identity's J) instead of the permutations alone."""
    space_pairs = {s.id: s.id for s in spec.free_spaces()}
    tensor_keys = list(keys) if keys is not None else default_tensor_keys(spec, base_state)
    return (yield from match_spaces(base_state, spec, target_state, spec, space_pairs,
                                    [(k, k) for k in tensor_keys], max_iter=max_iter, seed=seed,
                                    restarts=restarts, cancel=cancel))


def result_permutations(result: MatchResult) -> dict[str, torch.Tensor]:
    """space -> permutation of every optimised (free, square) space of a whole-model match."""
    return {s: result.matches[s].permutation() for s in result.optimised if s in result.matches}


def result_copy_orders(result: MatchResult) -> dict[str, torch.Tensor]:
    """space -> copy orders (heads x repeat) of every space whose grouped-query copies the
    match reorders: with :func:`result_permutations`, what ``permute_state`` needs."""
    return {s: m.copy_order_tensor() for s, m in result.matches.items() if m.copies}


def aligned_target(target_state: Mapping[str, torch.Tensor], spec: PermutationSpec,
                   result: MatchResult) -> dict[str, torch.Tensor]:
    """The target state of a whole-model match brought into the base's basin: its permutations
    and grouped-query copy orders applied (the same function as the target)."""
    return permute_state(target_state, spec, result_permutations(result),
                         result_copy_orders(result))


def _prefix(spec: PermutationSpec, layer: int | str, who: str) -> list[Layer]:
    ordered = sorted(spec.layers, key=lambda lay: lay.index)
    for pos, lay in enumerate(ordered):
        if lay.name == layer if isinstance(layer, str) else lay.index == layer:
            return ordered[: pos + 1]
    raise AlignmentError(f"{who} model has no layer {layer!r}")


def chain_layers(base_spec: PermutationSpec, target_spec: PermutationSpec,
                 base_layer_index: int | str, target_layer_index: int | str, start: int = 0
                 ) -> list[tuple[Layer, Layer]]:
    """The (base, target) layer pairs of a chain: both prefixes in execution order, up to and
    including the named layers (a ``Layer.index`` or a name), from the ``start``-th pair on.

    Raises:
        AlignmentError: unknown layer, or prefixes of different depth.
    """
    bp = _prefix(base_spec, base_layer_index, "base")
    tp = _prefix(target_spec, target_layer_index, "target")
    if len(bp) != len(tp):
        raise AlignmentError(
            f"chain alignment needs the same depth: base {bp[-1].name} is layer {len(bp)}, "
            f"target {tp[-1].name} is layer {len(tp)}")
    return list(zip(bp, tp))[start:]


def chain_pairs(
    base_spec: PermutationSpec,
    target_spec: PermutationSpec,
    base_layer_index: int | str,
    target_layer_index: int | str,
    start: int = 0,
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Pair the layer prefixes of two models for chain alignment.

    Base layers up to and including ``base_layer_index`` (a ``Layer.index`` or a layer name),
    in execution order, are paired one to one with the target's layers up to
    ``target_layer_index``: their weights, biases (when both have one), norm tensors (by their
    last name component, when both have it) and the spaces of their output and input axes.
    ``start``: leave out the first ``start`` pairs (a chain that starts inside the model).

    Returns:
        (space_pairs, tensor_pairs) for :func:`match_spaces` and :func:`apply_matches`.
    Raises:
        AlignmentError: unknown layer, prefixes of different depth, layers of different kind or
        kernel size, or a space paired to two different spaces (the prefix is not one chain).
    """
    space_pairs: dict[str, str] = {}
    reverse: dict[str, str] = {}
    tensor_pairs: list[tuple[str, str]] = []
    for lb, lt in chain_layers(base_spec, target_spec, base_layer_index, target_layer_index,
                               start):
        where = f"base {lb.name} / target {lt.name}"
        if lb.kind != lt.kind:
            raise AlignmentError(f"{where}: {lb.kind} vs {lt.kind} layers cannot be chained")
        if tuple(lb.kernel) != tuple(lt.kernel):
            raise AlignmentError(f"{where}: kernel {kernel_text(lb.kernel)} vs "
                                 f"{kernel_text(lt.kernel)} cannot merge")
        for ab, at in ((lb.out_axis, lt.out_axis), (lb.in_axis, lt.in_axis)):
            if ab.block != at.block:
                raise AlignmentError(f"{where}: {ab.block} vs {at.block} features per input unit "
                                     "(different spatial sizes cannot merge)")
            if ab.layout != at.layout:  # weight matching needs the whole layout alike
                raise AlignmentError(f"{where}: units laid out differently (block, tiles, "
                                     f"repeat, span {ab.layout} vs {at.layout}: stacked copies "
                                     "or grouped-query heads of another group size)")
            if space_pairs.setdefault(ab.space, at.space) != at.space:
                raise AlignmentError(f"{where}: base space {ab.space!r} would pair with both "
                                     f"{space_pairs[ab.space]!r} and {at.space!r}; not one chain")
            if reverse.setdefault(at.space, ab.space) != ab.space:
                raise AlignmentError(f"{where}: target space {at.space!r} would pair with both "
                                     f"{reverse[at.space]!r} and {ab.space!r}; not one chain")
        tensor_pairs.append((lb.weight, lt.weight))
        if lb.bias is not None and lt.bias is not None:
            tensor_pairs.append((lb.bias, lt.bias))
        t_riders = recurrent_riders(lt.weight, target_spec.axes)
        for role, key in recurrent_riders(lb.weight, base_spec.axes).items():
            if role in t_riders:  # a recurrent layer's hidden weight, bias, reverse direction
                tensor_pairs.append((key, t_riders[role]))
        t_norm = {key.rsplit(".", 1)[-1]: key for key in lt.norm}
        for key in lb.norm:
            suffix = key.rsplit(".", 1)[-1]
            if suffix in t_norm and suffix != "num_batches_tracked":
                tensor_pairs.append((key, t_norm[suffix]))
    # Tensors that ride on the paired spaces without belonging to a layer (a residual stream's
    # LayerNorms) are evidence too: without them coordinate descent can settle in a poor local
    # optimum (seen on the Mixer). Paired when both models have the key and every axis maps.
    paired = {b for b, _ in tensor_pairs}
    for key, axes in base_spec.axes.items():
        t_axes = target_spec.axes.get(key)
        if key in paired or not axes or t_axes is None or len(t_axes) != len(axes):
            continue
        if all(a is not None and b is not None and a.layout == b.layout
               and space_pairs.get(a.space) == b.space for a, b in zip(axes, t_axes)):
            tensor_pairs.append((key, key))
    return space_pairs, tensor_pairs

