"""What the study measures: the curves and iterated merges behind each law of mal_method.md §8.

Each ``plan_*`` function lists measurements for one part of the study; the study job runs the
union once (a curve needed by two parts is measured once). All curves are evaluated on the base
model's data (digits); "aligned" is chain alignment for layer-level merges (local when the two
models' layer prefixes differ) and whole-model weight matching for whole-model curves.

Layers are picked by rule, not by name: *first* is the first weight layer, *last* the head,
*middle* the weight layer with both sides free (hidden on both) closest to the middle of the
network.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..align.generalized import side_text
from ..graph.spec import PermutationSpec
from .bench import Bench, CurveSpec, IteratedSpec
from .zoo import BASE_DATASET, DIFFERENT_DATASET, StudyModel, StudyZoo, nine_case_sizes

POSITIONS = ("first", "middle", "last")


def _ordered(spec: PermutationSpec):
    return sorted(spec.layers, key=lambda layer: layer.index)


def layer_at(spec: PermutationSpec, position: str) -> str:
    """The name of the first, middle or last weight layer of a model."""
    layers = _ordered(spec)
    if position == "first":
        return layers[0].name
    if position == "last":
        return layers[-1].name
    free = [(i, layer) for i, layer in enumerate(layers)
            if not spec.spaces[layer.out_axis.space].fixed
            and not spec.spaces[layer.in_axis.space].fixed]
    if not free:
        return layers[len(layers) // 2].name
    centre = len(layers) // 2
    return min(free, key=lambda item: (abs(item[0] - centre), item[0]))[1].name


def heatmap_targets(zoo: StudyZoo, family: str, exclude: str, k: int) -> list[StudyModel]:
    """Up to ``k`` same-data targets of ``family``: the middle width's second seed first (the
    model that also exists trained on different data), then the other models by width."""
    fam = zoo.families[family]
    order = [zoo.find(family, fam.mid, 1), zoo.find(family, fam.mid, 0)]
    order += [zoo.find(family, w) for w in fam.widths if w != fam.mid]
    out: list[StudyModel] = []
    for m in order:
        if m is not None and m.name != exclude and m not in out:
            out.append(m)
    return out[:k]


def different_target(zoo: StudyZoo, family: str) -> StudyModel | None:
    """The family's middle-width model trained on the different data set (seed 1 preferred)."""
    fam = zoo.families[family]
    return zoo.find(family, fam.mid, 1, DIFFERENT_DATASET) or \
        zoo.find(family, fam.mid, None, DIFFERENT_DATASET)


@dataclass(frozen=True)
class HeatmapCell:
    """The curves behind one heatmap cell (base family row, target family column)."""

    base_family: str
    target_family: str
    same: tuple[str, ...]       # curve keys, same-data targets
    different: tuple[str, ...]  # curve keys, different-data target


def plan_whole(zoo: StudyZoo) -> list[CurveSpec]:
    """Whole-model curves of each family's base with its same-width partners: the second seed
    on the same data, and every model of that width trained on other data (target task too)."""
    out: list[CurveSpec] = []
    for family, fam in zoo.families.items():
        base = zoo.base(family)
        if base is None:
            continue
        same = [m for m in heatmap_targets(zoo, family, base.name, 1) if m.width == fam.mid]
        out += [CurveSpec(base.name, m.name) for m in same]
        others = sorted((m for m in zoo.models.values() if m.family == family
                         and m.dataset != BASE_DATASET and m.config == base.config),
                        key=lambda m: m.name)
        out += [CurveSpec(base.name, m.name, (), True) for m in others]
    return out


def plan_heatmaps(zoo: StudyZoo, bench: Bench, pairs_per_cell: int
                  ) -> tuple[list[CurveSpec], list[HeatmapCell]]:
    """Architecture x architecture: each family's base takes the head of targets of every
    family (the one layer every family has and every pair can merge)."""
    specs: list[CurveSpec] = []
    cells: list[HeatmapCell] = []
    for a in zoo.families:
        base = zoo.base(a)
        if base is None:
            continue
        dst = layer_at(bench.spec_of(base.name), "last")
        for b in zoo.families:
            same_keys, diff_keys = [], []
            for t in heatmap_targets(zoo, b, base.name, pairs_per_cell):
                s = CurveSpec(base.name, t.name, ((layer_at(bench.spec_of(t.name), "last"), dst),))
                specs.append(s)
                same_keys.append(s.key)
            t = different_target(zoo, b)
            if t is not None:
                s = CurveSpec(base.name, t.name, ((layer_at(bench.spec_of(t.name), "last"), dst),))
                specs.append(s)
                diff_keys.append(s.key)
            cells.append(HeatmapCell(a, b, tuple(same_keys), tuple(diff_keys)))
    return specs, cells


def plan_width_cases(zoo: StudyZoo, bench: Bench) -> tuple[list[CurveSpec], list[dict]]:
    """The nine width cases: the base MLP's middle layer takes the middle layer of MLPs whose
    two hidden widths are each half, equal to or twice the base's."""
    base = zoo.base("mlp")
    if base is None:
        return [], []
    layer = layer_at(bench.spec_of(base.name), "middle")
    mid = int(base.config["widths"][0])
    specs, cases = [], []
    for b_out in nine_case_sizes(mid):
        for a_in in nine_case_sizes(mid):
            target = zoo.with_widths([a_in, b_out], exclude=base.name)
            if target is None:
                continue
            s = CurveSpec(base.name, target.name, ((layer, layer),))
            specs.append(s)
            cases.append({"out": side_text(mid, b_out)[0], "in": side_text(mid, a_in)[0],
                          "target_out": b_out, "target_in": a_in, "base_width": mid,
                          "key": s.key})
    return specs, cases


def plan_ratios(zoo: StudyZoo, bench: Bench) -> list[CurveSpec]:
    """Width ratio vs lambda*: within each family, every base width takes the middle layer of
    each other same-data model of the family."""
    specs = []
    for family, fam in zoo.families.items():
        for w in fam.widths:
            base = zoo.find(family, w, 0) or zoo.find(family, w)
            if base is None:
                continue
            layer = layer_at(bench.spec_of(base.name), "middle")
            for t in zoo.partners(family, base.name):
                specs.append(CurveSpec(base.name, t.name, ((layer, layer),)))
    return specs


def plan_positions(zoo: StudyZoo, bench: Bench) -> tuple[list[CurveSpec], list[dict]]:
    """Layer position: the base takes only the first, only the middle or only the last layer
    of the same-width second seed and of the widest other model of its family."""
    specs, rows = [], []
    for family in zoo.families:
        base = zoo.base(family)
        if base is None:
            continue
        partners = zoo.partners(family, base.name)
        targets = partners[:1]
        widest = max(partners, key=lambda m: (m.width or 0), default=None)
        if widest is not None and widest not in targets:
            targets.append(widest)
        for position in POSITIONS:
            layer = layer_at(bench.spec_of(base.name), position)
            for t in targets:
                s = CurveSpec(base.name, t.name, ((layer, layer),))
                specs.append(s)
                rows.append({"family": family, "position": position, "layer": layer,
                             "target": t.name, "key": s.key})
    return specs, rows


def plan_iterated(zoo: StudyZoo, bench: Bench, steps: int, lam: float) -> list[IteratedSpec]:
    """Iterated small steps: each family's base takes its middle layer from the family's other
    models in turn, ``steps`` times at ``lam`` each."""
    out = []
    for family in zoo.families:
        base = zoo.base(family)
        if base is None:
            continue
        donors = tuple(m.name for m in zoo.partners(family, base.name))
        if donors:
            out.append(IteratedSpec(family, base.name, donors,
                                    layer_at(bench.spec_of(base.name), "middle"), lam, steps))
    return out
