"""A block (a transformer layer, a residual block) merged as a whole: its weight layers paired
by name with another block's, as one step per layer.

A block of a zoo model dropped on a block of the base becomes the steps "zoo block.NAME ->
base block.NAME" for every weight layer NAME inside them, in execution order, so the steps of
one donor share a chain solve (merge/chains.py) as if written one by one. The blocks must hold
the same layers by name; their other tensors (a transformer layer's RMSNorms) are not layers
and keep the base's values.
"""

from __future__ import annotations

from ..errors import PlanError
from ..graph.spec import PermutationSpec
from .plan import AssemblyStep


def block_layers(spec: PermutationSpec, block: str) -> dict[str, str]:
    """The weight layers inside module ``block``: name relative to the block -> layer name,
    in execution order (empty when ``block`` holds none or is itself a weight layer)."""
    prefix = f"{block}." if block else ""
    inside = sorted((layer for layer in spec.layers if layer.name.startswith(prefix)),
                    key=lambda layer: layer.index)
    return {layer.name[len(prefix):]: layer.name for layer in inside}


def block_steps(source: str, donor_spec: PermutationSpec, donor_block: str,
                base_spec: PermutationSpec, base_block: str, **step_options) -> list[AssemblyStep]:
    """One step per weight layer of ``donor_block`` into the layer of the same name in
    ``base_block``, in the base's execution order; ``step_options`` (lam, align, ...) go to
    every step.

    Raises:
        PlanError: a block holding no weight layer, or blocks whose layers differ by name
            (naming what one has and the other lacks).
    """
    donor, base = block_layers(donor_spec, donor_block), block_layers(base_spec, base_block)
    for block, layers in ((donor_block, donor), (base_block, base)):
        if not layers:
            raise PlanError(f"{block or 'the model'} holds no weight layer to merge")
    if donor.keys() != base.keys():
        only_donor = sorted(donor.keys() - base.keys())
        only_base = sorted(base.keys() - donor.keys())
        what = "; ".join(part for part in (
            f"only {donor_block} has {', '.join(only_donor[:4])}" if only_donor else "",
            f"only {base_block} has {', '.join(only_base[:4])}" if only_base else "") if part)
        raise PlanError(f"{donor_block} and {base_block} hold different layers ({what}): "
                        "merge their layers one by one")
    return [AssemblyStep(source, donor[name], base[name], **step_options) for name in base]
