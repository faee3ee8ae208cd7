"""A block (a transformer layer, a residual block) merged as a whole: its weight layers paired
by name with another block's, as one step per layer, and its norms with them.

A block of a zoo model dropped on a block of the base becomes the steps "zoo block.NAME ->
base block.NAME" for every weight layer NAME inside them, in execution order, so the steps of
one donor share a chain solve (merge/chains.py) as if written one by one. The blocks must hold
the same layers by name. The block's other modules whose tensors lie on the units of its
layers (a transformer layer's RMSNorms on the residual stream) go with the first step whose
layer reads or writes those units (``AssemblyStep.norms``): they are moved by that layer's maps
and merged at its lambda.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import PlanError
from ..graph.recurrent import recurrent_riders
from ..graph.spec import PermutationSpec
from .plan import AssemblyPlan, AssemblyStep


def block_modules(spec: PermutationSpec) -> frozenset[str]:
    """The modules that hold weight layers without being one: what can merge as a block
    (those for which :func:`block_layers` is not empty)."""
    layers = {layer.name for layer in spec.layers}
    prefixes = {".".join(parts[:i]) for parts in (name.split(".") for name in layers)
                for i in range(1, len(parts))}
    return frozenset(prefixes - layers)


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
    steps = [AssemblyStep(source, donor[name], base[name], **step_options) for name in base]
    return _with_norms(steps, base_spec, base_block, donor_spec, donor_block)


def _with_norms(steps: list[AssemblyStep], base_spec: PermutationSpec, base_block: str,
                donor_spec: PermutationSpec, donor_block: str) -> list[AssemblyStep]:
    """``steps`` with the block's norms given to the first step whose layer's units they lie
    on (its input units first: a pre-norm reads the stream its layer reads)."""
    owned: set[str] = set()  # the tensors the layers merge themselves
    for layer in base_spec.layers:
        owned.update([layer.weight, *([layer.bias] if layer.bias else []), *layer.norm,
                      *recurrent_riders(layer.weight, base_spec.axes).values()])
    prefix = f"{base_block}." if base_block else ""
    modules: dict[str, set[str]] = {}  # module -> the spaces its tensors lie on
    for key, axes in base_spec.axes.items():
        module = key.rpartition(".")[0]
        if not key.startswith(prefix) or key in owned or not axes:
            continue
        spaces = modules.setdefault(module, set())
        spaces.update(a.space if a is not None else "" for a in axes)
    layers = {layer.name: layer for layer in base_spec.layers}
    norms: dict[int, list[tuple[str, str]]] = {}
    for module, spaces in modules.items():
        donor_module = donor_block + module[len(base_block):]
        if "" in spaces or not donor_spec.module_tensors(donor_module):
            continue  # an axis on no space, or no counterpart: it keeps the base's values
        for side in ("in", "out"):
            at = next((i for i, step in enumerate(steps)
                       if spaces == {getattr(layers[step.base_layer], f"{side}_axis").space}),
                      None)
            if at is not None:
                norms.setdefault(at, []).append((donor_module, module))
                break
    return [dataclasses.replace(step, norms=tuple(norms.get(i, ()))) for i, step in
            enumerate(steps)]


def expand_block_steps(plan: AssemblyPlan, spec_of: Callable[[str], PermutationSpec],
                       is_layer: Callable[[str, str], bool]) -> AssemblyPlan:
    """``plan`` with every step that names two blocks (a transformer layer into another, as
    the app's block drop does) replaced by :func:`block_steps`, each carrying the step's
    lambda, alignment, method and parameters. Steps naming layers stay as they are.

    spec_of: model path -> its permutation spec (asked only for models a block step names).
    is_layer: (model path, name) -> whether ``name`` is a weight layer of that model, from its
    headers (no spec needed for a plan of layers only).
    Raises PlanError as :func:`block_steps` (blocks holding different layers).
    """
    steps: list[AssemblyStep] = []
    for step in plan.steps:
        donor = plan.zoo.get(step.source)
        if donor is None or is_layer(plan.base, step.base_layer) \
                or is_layer(donor, step.source_layer) or step.norms:
            steps.append(step)
            continue
        base_spec, donor_spec = spec_of(plan.base), spec_of(donor)
        if step.base_layer not in block_modules(base_spec) \
                or step.source_layer not in block_modules(donor_spec):
            steps.append(step)  # not blocks either: the pre-flight check names the problem
            continue
        steps += block_steps(step.source, donor_spec, step.source_layer, base_spec,
                             step.base_layer, lam=step.lam, align=step.align,
                             unmatched=step.unmatched, method=step.method, params=step.params)
    if len(steps) == len(plan.steps):
        return plan
    expanded = plan.copy()
    expanded.steps = steps
    return expanded
