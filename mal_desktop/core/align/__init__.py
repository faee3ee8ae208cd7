"""Alignment engine: generalized permutations, LAP solvers, local and chain alignment,
whole-model weight matching and optional activation matching (mal_method.md sec. 3, 4, 9)."""

from ..lazy import lazy_exports

_EXPORTS = {
    "LayerAlignment": "local",
    "Match": "generalized",
    "MatchResult": "matching",
    "ShapeCase": "generalized",
    "activation_cost": "activations",
    "align_layer_pair": "local",
    "aligned_layer": "local",
    "apply_matches": "matching",
    "assignment_value": "lap",
    "axis_cost": "generalized",
    "chain_pairs": "matching",
    "default_tensor_keys": "matching",
    "is_statistic": "matching",
    "match_by_activations": "activations",
    "match_spaces": "matching",
    "shape_case": "generalized",
    "solve_lap": "lap",
    "transform_tensor": "generalized",
    "weight_matching": "matching",
}
__all__ = sorted(_EXPORTS)

# Imported on first use, like the other packages (see core/lazy.py): importing one aligner
# (``align.matching`` for a whole-model match) need not import activation matching too.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
