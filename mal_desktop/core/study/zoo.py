"""The study's view of the zoo: which models exist, their family and width, and which extra
models the study needs beyond the demo zoo.

The demo zoo (core/zoo/build.py) has five families at three widths, a second seed at each middle
width, and "different data" variants for mlp and cnn only. The study adds, in a separate folder
(``<zoo>/study-extras``, so the demo zoo's own index stays as built):

- a digits-rot90 variant of every family's middle-width second-seed model that lacks one, so the
  different-data heatmap has a model of every family;
- MLPs with unequal hidden widths ``[a, b]``, so the base MLP's middle layer meets targets that
  are wider, equal and narrower on each side independently: the nine width cases.
"""

from __future__ import annotations

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
                                                     _mid_width(self._regular(family), widths))

    def _regular(self, family: str) -> list[StudyModel]:
        return [m for m in self.models.values() if m.family == family and m.width is not None]

    def find(self, family: str, width: int | None, seed: int | None = None,
             dataset: str = BASE_DATASET) -> StudyModel | None:
        """The regular model of ``family`` at ``width`` (and ``seed``) trained on ``dataset``;
        the lowest seed when ``seed`` is None."""
        found = [m for m in self._regular(family) if m.width == width and m.dataset == dataset
                 and (seed is None or m.seed == seed)]
        return min(found, key=lambda m: m.seed) if found else None

    def base(self, family: str) -> StudyModel | None:
        """The family's base model: middle width, seed 0 (else the lowest seed), base data."""
        fam = self.families.get(family)
        return None if fam is None else self.find(family, fam.mid, 0) or self.find(family, fam.mid)

    def partners(self, family: str, exclude: str) -> list[StudyModel]:
        """Other base-data models of ``family``, in order: middle width other seed, then the
        widths ascending (seed 0) - the targets a base of this family is paired with."""
        fam = self.families.get(family)
        if fam is None:
            return []
        out: list[StudyModel] = []
        mid_other = [m for m in self._regular(family) if m.width == fam.mid
                     and m.dataset == BASE_DATASET and m.name != exclude]
        out += sorted(mid_other, key=lambda m: m.seed)[:1]
        for w in fam.widths:
            m = self.find(family, w)
            if m is not None and m.name != exclude and m not in out:
                out.append(m)
        return out

    def with_widths(self, widths: Sequence[int], exclude: str) -> StudyModel | None:
        """A base-data MLP whose hidden widths are exactly ``widths`` (not ``exclude``)."""
        found = [m for m in self.models.values() if m.family == "mlp" and m.name != exclude
                 and m.dataset == BASE_DATASET and list(m.config.get("widths", [])) == list(widths)]
        return max(found, key=lambda m: m.seed) if found else None


def _mid_width(models: list[StudyModel], widths: list[int]) -> int:
    """The width trained with a second seed (the zoo's middle width), else the median."""
    seeded = sorted({m.width for m in models if m.seed != 0 and m.dataset == BASE_DATASET
                     and m.width is not None})
    return seeded[0] if seeded else widths[(len(widths) - 1) // 2]


def nine_case_sizes(mid: int) -> tuple[int, int, int]:
    """Target widths on one side of the base MLP's middle layer: narrower, equal, wider."""
    return (mid // 2, mid, mid * 2)


def study_entries(small: bool) -> tuple[list[ZooEntry], list[ZooEntry]]:
    """(demo-zoo entries, study-extra entries) for a default or ``small`` study."""
    base = default_zoo(small)
    extras: list[ZooEntry] = []
    names = {e.name for e in base}
    # Different data for every family: copy the middle-width second-seed entry onto rot90.
    for e in base:
        if e.seed == 1 and e.dataset == BASE_DATASET:
            has = any(o.family == e.family and o.seed == 1 and o.dataset == DIFFERENT_DATASET
                      and o.config == e.config for o in base)
            name = f"{e.name}-{DIFFERENT_DATASET.removeprefix('digits-')}"
            if not has and name not in names:
                extras.append(replace(e, name=name, dataset=DIFFERENT_DATASET))
                names.add(name)
    # Unequal-width MLPs for the nine width cases around the base MLP's middle width.
    mlps = [e for e in base if e.family == "mlp" and e.dataset == BASE_DATASET]
    seeded = [e for e in mlps if e.seed == 1]
    template = seeded[0] if seeded else (mlps[0] if mlps else None)
    if template is not None:
        mid = int(template.config["widths"][0])
        sizes = nine_case_sizes(mid)
        have = {tuple(e.config["widths"]) for e in mlps if e.seed == 1 or
                tuple(e.config["widths"]) != (mid, mid)}
        for a in sizes:        # in side of the middle layer = first hidden width
            for b in sizes:    # out side = second hidden width
                if (a, b) in have:
                    continue
                name = f"mlp-w{a}-s0" if a == b else f"mlp-w{a}x{b}-s0"
                if name not in names:
                    extras.append(ZooEntry(name, "mlp", {"widths": [a, b]}, BASE_DATASET, 0,
                                           template.epochs, template.lr, template.batch_size))
                    names.add(name)
    return base, extras
