"""What the study measures: the curves and iterated merges behind each law of mal_method.md §8.

Each ``plan_*`` function lists, for every replicate r (seed r as the base, the next seeds as
its partners, see ``zoo.replicate_seeds``), the measurements of one part of the study and rows
saying how the laws use them; the study job runs the union once (a curve needed by two parts
is measured once). All curves are evaluated on the base model's data (digits).

Layers are picked by rule, not by name: *first* is the first weight layer, *last* the head,
*middle* the weight layer with both sides free (hidden on both) closest to the middle of the
network.
"""

from __future__ import annotations

from typing import Any

from ..align.generalized import side_text
from ..graph.spec import PermutationSpec
from .bench import Bench, CurveSpec
from .zoo import (BASE_DATASET, DIFFERENT_DATASET, StudyModel, StudyZoo, nine_case_sizes,
                  replicate_seeds)

POSITIONS = ("first", "middle", "last")
Row = dict[str, Any]


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


class Planner:
    """The plan_* functions over one zoo, bench and seed list."""

    def __init__(self, zoo: StudyZoo, bench: Bench, seeds: list[int]) -> None:
        self.zoo, self.bench, self.seeds = zoo, bench, seeds

    def replicates(self):
        """(r, base seed, partner seed, second partner seed) for each replicate."""
        return [(r, *replicate_seeds(self.seeds, r)) for r in range(len(self.seeds))]

    def mid(self, family: str, seed: int, dataset: str = BASE_DATASET) -> StudyModel | None:
        return self.zoo.find(family, self.zoo.families[family].mid, seed, dataset)

    def layer(self, name: str, position: str) -> str:
        return layer_at(self.bench.spec_of(name), position)

    def different(self, family: str, seed: int) -> list[StudyModel]:
        """The family's middle-width models of ``seed`` trained on other data than digits."""
        fam = self.zoo.families[family]
        return sorted((m for m in self.zoo.models.values() if m.family == family
                       and m.width == fam.mid and m.seed == seed and m.dataset != BASE_DATASET),
                      key=lambda m: m.dataset)

    # -- parts ----------------------------------------------------------------------------
    def whole(self) -> tuple[list[CurveSpec], list[Row]]:
        """Whole-model curves of each family's base with the same-configuration partner, and
        with the partner's twins trained on other data (same seed, only the data differs).
        With two seeds the second replicate would repeat the first pair mirrored, so it is
        left out."""
        specs, rows = [], []
        seen: set[frozenset[str]] = set()
        for family in self.zoo.families:
            for r, b, p, _ in self.replicates():
                base, same = self.mid(family, b), self.mid(family, p)
                if base is None or same is None:
                    continue
                # A whole-model merge of two seeds is symmetric (the same pair from the other
                # side gives the mirrored curve): count each pair of models once.
                pair = frozenset((base.name, same.name))
                if pair in seen:
                    continue
                seen.add(pair)
                for t in [same] + self.different(family, p):
                    s = CurveSpec(base.name, t.name)
                    specs.append(s)
                    rows.append({"family": family, "replicate": r, "key": s.key,
                                 "dataset": t.dataset, "same_key": CurveSpec(base.name,
                                                                             same.name).key})
        return specs, rows

    def heatmaps(self) -> tuple[list[CurveSpec], list[Row]]:
        """Architecture x architecture: each family's base takes the head of each family's
        middle-width partner, once trained on digits and once on digits-rot90 (its twin)."""
        specs, rows = [], []
        for a in self.zoo.families:
            for r, b, p, _ in self.replicates():
                base = self.mid(a, b)
                if base is None:
                    continue
                dst = self.layer(base.name, "last")
                for fam_b in self.zoo.families:
                    same, diff = self.mid(fam_b, p), self.mid(fam_b, p, DIFFERENT_DATASET)
                    keys = {}
                    for role, t in (("same", same), ("different", diff)):
                        if t is not None:
                            s = CurveSpec(base.name, t.name, ((self.layer(t.name, "last"), dst),))
                            specs.append(s)
                            keys[role] = s.key
                    rows.append({"base_family": a, "target_family": fam_b, "replicate": r,
                                 "same": keys.get("same"), "different": keys.get("different")})
        return specs, rows

    def width_cases(self) -> tuple[list[CurveSpec], list[Row]]:
        """The nine width cases: the base MLP's middle layer takes the middle layer of MLPs
        whose two hidden widths are each half, equal to or twice the base's."""
        if "mlp" not in self.zoo.families:
            return [], []
        specs, rows = [], []
        for r, b, p, _ in self.replicates():
            base = self.mid("mlp", b)
            if base is None:
                continue
            layer = self.layer(base.name, "middle")
            mid = int(base.config["widths"][0])
            for b_out in nine_case_sizes(mid):
                for a_in in nine_case_sizes(mid):
                    target = self.zoo.with_widths([a_in, b_out], p)
                    if target is None:
                        continue
                    s = CurveSpec(base.name, target.name, ((layer, layer),))
                    specs.append(s)
                    rows.append({"replicate": r, "out": side_text(mid, b_out)[0],
                                 "in": side_text(mid, a_in)[0], "target_out": b_out,
                                 "target_in": a_in, "base_width": mid, "key": s.key})
        return specs, rows

    def ratios(self) -> tuple[list[CurveSpec], list[Row]]:
        """Width ratio vs lambda*: within each family, every base width takes the middle layer
        of the partner seed's model at every width (its own width included)."""
        specs, rows = [], []
        for family, fam in self.zoo.families.items():
            for r, b, p, _ in self.replicates():
                for w in fam.widths:
                    base = self.zoo.find(family, w, b)
                    if base is None:
                        continue
                    layer = self.layer(base.name, "middle")
                    for w2 in fam.widths:
                        t = self.zoo.find(family, w2, p)
                        if t is None:
                            continue
                        s = CurveSpec(base.name, t.name, ((layer, layer),))
                        specs.append(s)
                        rows.append({"family": family, "replicate": r, "base_width": w,
                                     "target_width": w2, "key": s.key})
        return specs, rows

    def position_targets(self, family: str, p: int, p2: int) -> list[tuple[str, StudyModel]]:
        fam = self.zoo.families[family]
        out = [("same width", self.mid(family, p))]
        if p2 != p:
            out.append(("same width, other seed", self.mid(family, p2)))
        widest = self.zoo.find(family, fam.widths[-1], p)
        if fam.widths[-1] != fam.mid:
            out.append(("widest", widest))
        return [(role, m) for role, m in out if m is not None]

    def positions(self) -> tuple[list[CurveSpec], list[Row]]:
        """Layer position: the base takes only its first, only its middle or only its last
        layer from each of several targets (same width, both partner seeds; the widest)."""
        specs, rows = [], []
        for family in self.zoo.families:
            for r, b, p, p2 in self.replicates():
                base = self.mid(family, b)
                if base is None:
                    continue
                for position in POSITIONS:
                    layer = self.layer(base.name, position)
                    for role, t in self.position_targets(family, p, p2):
                        s = CurveSpec(base.name, t.name, ((layer, layer),))
                        specs.append(s)
                        rows.append({"family": family, "replicate": r, "position": position,
                                     "layer": layer, "target": t.name, "target_role": role,
                                     "key": s.key})
        return specs, rows

    def iterated(self, steps: int) -> tuple[list[CurveSpec], list[Row]]:
        """Iterated merges: each family's base takes its middle layer from the family's other
        models in turn (same width both partner seeds, then the other widths), ``steps`` times.
        Each donor's own middle-layer curve (listed here) gives that step's threshold."""
        specs, rows = [], []
        for family, fam in self.zoo.families.items():
            for r, b, p, p2 in self.replicates():
                base = self.mid(family, b)
                if base is None:
                    continue
                layer = self.layer(base.name, "middle")
                donors: list[StudyModel] = []
                for m in [self.mid(family, p), self.mid(family, p2)] + \
                        [self.zoo.find(family, w, p) for w in fam.widths if w != fam.mid]:
                    if m is not None and m.name != base.name and m not in donors:
                        donors.append(m)
                if not donors:
                    continue
                chain = [donors[k % len(donors)].name for k in range(steps)]
                keys = []
                for name in chain:
                    s = CurveSpec(base.name, name, ((layer, layer),))
                    specs.append(s)
                    keys.append(s.key)
                rows.append({"family": family, "replicate": r, "base": base.name,
                             "layer": layer, "donors": chain, "threshold_keys": keys})
        return specs, rows
