"""Alignment engine: generalized permutations, LAP solvers, local and chain alignment,
whole-model weight matching and optional activation matching (mal_method.md sec. 3, 4, 9)."""

from .activations import activation_cost, match_by_activations
from .generalized import Match, ShapeCase, axis_cost, shape_case, transform_tensor
from .lap import assignment_value, solve_lap
from .local import LayerAlignment, align_layer_pair, aligned_layer
from .matching import (
    MatchResult,
    apply_matches,
    chain_pairs,
    default_tensor_keys,
    is_statistic,
    match_spaces,
    weight_matching,
)

__all__ = [
    "LayerAlignment",
    "Match",
    "MatchResult",
    "ShapeCase",
    "activation_cost",
    "align_layer_pair",
    "aligned_layer",
    "apply_matches",
    "assignment_value",
    "axis_cost",
    "chain_pairs",
    "default_tensor_keys",
    "is_statistic",
    "match_by_activations",
    "match_spaces",
    "shape_case",
    "solve_lap",
    "transform_tensor",
    "weight_matching",
]
