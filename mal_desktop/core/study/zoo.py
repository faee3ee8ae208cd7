"""The study's view of the zoo: which models exist, their family, width and configuration, and
which extra models the study needs beyond the demo zoo.

The demo zoo (core/zoo/build.py) has five families at three widths, a second seed at each middle
width, and "different data" variants for mlp and cnn only. The study measures every law over
several seeds, so it completes, in a separate folder (``<zoo>/study-extras``, so the demo zoo's
own index stays as built), every configuration it uses to ``seeds`` seeds:

- every family at every width on digits;
- the middle width on different data (mlp and cnn: permuted, rot90, inverted, as in the demo
  zoo; the other families digits-rot90), so every family has different-data targets;
- MLPs with unequal hidden widths ``[a, b]``, so the base MLP's middle layer meets targets that
  are wider, equal and narrower on each side independently: the nine width cases.

A *configuration* is a model less its seed (:func:`config_id`); a *replicate* r of a
measurement takes its base from seed r and its partners from the next seeds
(:func:`replicate_seeds`), so replicates use disjoint pairs of independently trained models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import MalError
from ..zoo.build import ZooEntry, ZooIndex, default_zoo

EXTRAS_DIR = "study-extras"
BASE_DATASET = "digits"
DIFFERENT_DATASET = "digits-rot90"


def width_of(family: str, config: dict[str, Any]) -> int | None:
    """The width label of a model (the zoo's naming unit), None for an irregular MLP."""
    if family == "mlp":
        widths = list(config.get("widths", []))
        return int(widths[0]) if widths and len(set(widths)) == 1 else None
    if family == "cnn":
        return int(config["channels"][0])
    if family == "vgg":
        return int(config["stages"][0][0])
    if family == "resnet":
        return int(config["width"])
    if family == "mixer":
        return int(config["dim"])
    raise MalError(f"the study does not know the width of family {family!r}")


@dataclass(frozen=True)
class StudyModel:
    """One zoo model as the study sees it."""

    name: str
    path: Path
    family: str
    width: int | None
    seed: int
    dataset: str
    config: dict[str, Any]
    test_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "width": self.width, "seed": self.seed,
                "dataset": self.dataset, "config": self.config,
                "test_accuracy": self.test_accuracy}


@dataclass(frozen=True)
class FamilyModels:
    """The regular models of one family: widths ascending; ``mid`` is the base width."""

    family: str
    widths: tuple[int, ...]
    mid: int


class StudyZoo:
    """All models the study may use, looked up by role."""

    def __init__(self, indices: Sequence[ZooIndex]) -> None:
        self.models: dict[str, StudyModel] = {}
        for index in indices:
            for e in index.entries:
                self.models[e.name] = StudyModel(e.name, index.path_of(e.name), e.family,
                                                 width_of(e.family, e.config), e.seed, e.dataset,
                                                 dict(e.config), e.test_accuracy)
        self.families: dict[str, FamilyModels] = {}
        for family in dict.fromkeys(m.family for m in self.models.values()):
            widths = sorted({m.width for m in self._regular(family) if m.width is not None})
            if widths:
                self.families[family] = FamilyModels(family, tuple(widths),
                                                     widths[(len(widths) - 1) // 2])

    def _regular(self, family: str) -> list[StudyModel]:
        return [m for m in self.models.values() if m.family == family and m.width is not None]

    def find(self, family: str, width: int | None, seed: int,
             dataset: str = BASE_DATASET) -> StudyModel | None:
        """The regular model of ``family`` at ``width`` and ``seed`` trained on ``dataset``."""
        for m in self._regular(family):
            if m.width == width and m.dataset == dataset and m.seed == seed:
                return m
        return None

    def with_widths(self, widths: Sequence[int], seed: int) -> StudyModel | None:
        """The base-data MLP with hidden widths exactly ``widths`` and ``seed``."""
        for m in self.models.values():
            if m.family == "mlp" and m.dataset == BASE_DATASET and m.seed == seed \
                    and list(m.config.get("widths", [])) == list(widths):
                return m
        return None

    def seeds(self) -> list[int]:
        """The seeds every regular base-data model of every family was trained with."""
        common: set[int] | None = None
        for family in self.families:
            have = {m.seed for m in self._regular(family) if m.dataset == BASE_DATASET}
            common = have if common is None else common & have
        return sorted(common or ())


def config_id(m: StudyModel) -> str:
    """The model's configuration: its name without the seed (``mlp-w64-s1-rot90`` ->
    ``mlp-w64-rot90``); models of one configuration differ in their seed only."""
    return re.sub(r"-s\d+", "", m.name, count=1)


def replicate_seeds(seeds: Sequence[int], r: int) -> tuple[int, int, int]:
    """(base seed, partner seed, second partner seed) of replicate ``r``: the base takes seed
    r, its same-configuration partners the next seeds in turn (the second partner equals the
    first when there are two seeds)."""
    k = len(seeds)
    return seeds[r], seeds[(r + 1) % k], seeds[(r + 2) % k] if k > 2 else seeds[(r + 1) % k]


def nine_case_sizes(mid: int) -> tuple[int, int, int]:
    """Target widths on one side of the base MLP's middle layer: narrower, equal, wider."""
    return (mid // 2, mid, mid * 2)


def _variants(base: list[ZooEntry]) -> dict[str, list[str]]:
    """Family -> the different-data sets the study trains its middle width on: those the demo
    zoo has for it, else digits-rot90."""
    out: dict[str, list[str]] = {}
    for e in base:
        if e.dataset != BASE_DATASET:
            out.setdefault(e.family, [])
            if e.dataset not in out[e.family]:
                out[e.family].append(e.dataset)
    for e in base:
        out.setdefault(e.family, [DIFFERENT_DATASET])
    return out


def study_entries(small: bool, seeds: int = 3) -> tuple[list[ZooEntry], list[ZooEntry]]:
    """(demo-zoo entries, study-extra entries) for a default or ``small`` study with
    ``seeds`` seeds (0 .. seeds-1) of every configuration it uses.

    The extras complete every configuration to all seeds: every family and width on digits,
    the middle width on each different data set (``_variants``), and the nine width-case MLPs
    around the base MLP's middle width. Each extra copies the recipe (epochs, lr, batch size)
    of its family's demo-zoo entry.
    """
    base = default_zoo(small)
    names = {e.name for e in base}
    have = {(e.family, json.dumps(e.config, sort_keys=True), e.dataset, e.seed) for e in base}
    extras: list[ZooEntry] = []

    def add(template: ZooEntry, config: dict[str, Any], dataset: str, seed: int,
            name: str) -> None:
        key = (template.family, json.dumps(config, sort_keys=True), dataset, seed)
        if key in have or name in names:
            return
        extras.append(replace(template, name=name, config=dict(config), dataset=dataset,
                              seed=seed))
        have.add(key)
        names.add(name)

    regular = [e for e in base if e.dataset == BASE_DATASET]
    widths: dict[str, list[ZooEntry]] = {}
    for e in regular:  # one template per family and width (the lowest seed)
        group = widths.setdefault(e.family, [])
        if all(g.config != e.config for g in group):
            group.append(e)
    variants = _variants(base)
    for family, group in widths.items():
        ordered = sorted(group, key=lambda e: width_of(e.family, e.config) or 0)
        mid = ordered[(len(ordered) - 1) // 2]
        w_mid = width_of(family, mid.config)
        for s in range(seeds):
            for e in ordered:
                w = width_of(family, e.config)
                add(e, e.config, BASE_DATASET, s, f"{family}-w{w}-s{s}")
            for dataset in variants[family]:
                add(mid, mid.config, dataset, s,
                    f"{family}-w{w_mid}-s{s}-{dataset.removeprefix('digits-')}")
    mlps = sorted(widths.get("mlp", []), key=lambda e: e.config["widths"][0])
    if mlps:
        template = mlps[(len(mlps) - 1) // 2]
        sizes = nine_case_sizes(int(template.config["widths"][0]))
        for s in range(seeds):
            for a in sizes:        # in side of the middle layer = first hidden width
                for b in sizes:    # out side = second hidden width
                    name = f"mlp-w{a}-s{s}" if a == b else f"mlp-w{a}x{b}-s{s}"
                    add(template, {"widths": [a, b]}, BASE_DATASET, s, name)
    return base, extras
