"""The study's measuring bench: interpolation curves and iterated merges over one model cache.

One bench lives in each measuring process (``runner.py``). It keeps one
:class:`~mal_desktop.core.jobs.ModelCache` (each file loaded and its permutation spaces
discovered once) and runs the engine's steps (``curve_series``, ``align_step``, ``merge_step``,
``whole_model_match``) on it. A curve record holds, at every lambda of the grid:

- the aligned merge on the base's task (loss and accuracy), and the naive merge when the
  target was trained on the base's data (law 1 compares the two on such pairs);
- ``aligned_repair``: the aligned merge with BatchNorm statistics re-estimated on the base's
  training data (REPAIR, ``evaluate/repair.py``), for bases with BatchNorm;
- ``target_task``: when the target was trained on other data, the aligned (and repaired) merge's
  accuracy on the target's task, whose value at lambda 0 is the base's own accuracy there;
- ``matching`` (whole-model curves): whole-model weight matching is restarted from
  ``restarts`` seeds; the restart with the highest matching objective is the aligned merge, and
  each restart's aligned mean loss is kept (how much the alignment alone moves the result).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..align.matching import aligned_target, default_tensor_keys, whole_model_match
from ..evaluate.curves import lerp_states, state_probe
from ..evaluate.datasets import Dataset, load_dataset
from ..evaluate.evaluator import evaluate_model, fit_inputs
from ..evaluate.metrics import barrier, mean_loss, threshold_lambda
from ..evaluate.repair import reset_batchnorm_stats
from ..io.model import LoadedModel
from ..jobs import ModelCache, curve_series
from ..merge.assemble import align_step, check_step_fits, merge_step
from ..merge.plan import AssemblyStep
from ..progress import run_job
from .zoo import StudyZoo

Layers = tuple[tuple[str, str], ...]
REPAIR_SAMPLES = 512  # training inputs the BatchNorm statistics are re-estimated on
StateAt = Callable[[float], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class CurveSpec:
    """One curve to measure: ``target`` merged into ``base`` (whole model when ``layers`` is
    empty, else those (source, base) layer pairs at one lambda)."""

    base: str
    target: str
    layers: Layers = ()

    @property
    def key(self) -> str:
        pairs = ",".join(f"{s}>{d}" for s, d in self.layers) or "whole"
        return f"{self.base}|{self.target}|{pairs}"


@dataclass(frozen=True)
class IteratedSpec:
    """Merges into ``base``'s ``layer``, one per donor of ``donors`` at the matching lambda of
    ``lams``, each aligned to the merged base so far."""

    family: str
    replicate: int
    base: str
    donors: tuple[str, ...]
    layer: str
    lams: tuple[float, ...]


def has_batchnorm(state: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith("running_mean") for k in state)


def series_metrics(lambdas: list[float], losses: list[float], accs: list[float],
                   epsilon: float) -> dict[str, Any]:
    """A series' points and its barrier, mean LMC loss and lambda*."""
    return {"loss": losses, "accuracy": accs, "barrier": barrier(lambdas, losses),
            "mean_lmc_loss": mean_loss(losses),
            "threshold": threshold_lambda(lambdas, accs, epsilon)}


class Bench:
    """Runs curve and iterated-merge measurements on the study zoo."""

    def __init__(self, zoo: StudyZoo, grid: int, epsilon: float, dataset: str,
                 restarts: int = 3) -> None:
        self.zoo = zoo
        self.lambdas = [i / (grid - 1) for i in range(grid)]
        self.epsilon = epsilon
        self.dataset_name = dataset
        self.restarts = max(1, restarts)
        self.cache = ModelCache()
        self._data: dict[str, Dataset] = {}
        self._base_evals: dict[tuple[int, str], Any] = {}

    def data(self, name: str) -> Dataset:
        if name not in self._data:
            self._data[name] = load_dataset(name)
        return self._data[name]

    def _path(self, name: str) -> str:
        return str(self.zoo.models[name].path)

    def model(self, name: str) -> LoadedModel:
        return self.cache.model(self._path(name))

    def spec_of(self, name: str):
        """The permutation spec of a zoo model (discovered once)."""
        return self.cache.spec(self._path(name))

    def state_of(self, name: str) -> dict[str, torch.Tensor]:
        return self.model(name).state()

    # -- evaluation -----------------------------------------------------------------------
    def _sweep(self, base: LoadedModel, state_at: StateAt, datasets: list[Dataset],
               repair: bool = False) -> list[tuple[list[float], list[float]]]:
        """(losses, accuracies) along the grid on each of ``datasets``; ``repair``
        re-estimates BatchNorm statistics on the first :data:`REPAIR_SAMPLES` training inputs
        of the base's task at interior lambdas (the end points stay the two models as they
        are)."""
        base_data = self.data(self.dataset_name)
        repair_x = fit_inputs(base, base_data.x_train[:REPAIR_SAMPLES], base_data.name) \
            if repair else None
        out: list[tuple[list[float], list[float]]] = [([], []) for _ in datasets]
        for lam in self.lambdas:
            if lam == 0.0:  # every series starts at the base itself, bit for bit
                for (losses, accs), data in zip(out, datasets):
                    r = self._base_eval(base, data)
                    losses.append(r.loss)
                    accs.append(r.accuracy)
                continue
            repair_here = repair_x is not None and 0.0 < lam < 1.0
            probe = state_probe(base, state_at(float(lam)), writable=repair_here)
            if repair_here:
                reset_batchnorm_stats(probe.module, repair_x)
            for (losses, accs), data in zip(out, datasets):
                r = evaluate_model(probe, data)
                losses.append(r.loss)
                accs.append(r.accuracy)
        return out

    def _base_eval(self, base: LoadedModel, data: Dataset):
        """The base model itself on ``data`` (evaluated once per base and data set)."""
        key = (id(base), data.name)
        if key not in self._base_evals:
            self._base_evals[key] = evaluate_model(base, data)
        return self._base_evals[key]

    def _metrics(self, losses: list[float], accs: list[float]) -> dict[str, Any]:
        return series_metrics(self.lambdas, losses, accs, self.epsilon)

    # -- curves ---------------------------------------------------------------------------
    def curve(self, spec: CurveSpec) -> dict[str, Any]:
        """Measure one curve; returns its plain-data record (see the module docstring)."""
        start = time.perf_counter()
        base = self.model(spec.base)
        b, t = self.zoo.models[spec.base], self.zoo.models[spec.target]
        rec: dict[str, Any] = {"key": spec.key, "kind": "layer" if spec.layers else "whole",
                               "base": b.name, "target": t.name,
                               "layers": [list(p) for p in spec.layers]}
        base_data = self.data(self.dataset_name)
        other = t.dataset != b.dataset
        datasets = [base_data] + ([self.data(t.dataset)] if other else [])
        if spec.layers:
            found = curve_series(self.cache, self._path(spec.base), self._path(spec.target),
                                 layers=list(spec.layers))
            naive, aligned = found.naive, found.aligned
            rec.update(align=found.align, note=found.note)
            swept = self._sweep(base, aligned, datasets)
        else:
            naive, aligned, matching, swept = self._whole_series(spec, datasets)
            rec.update(align="weight", note="", matching=matching)
        if not other:  # the naive merge is compared on same-data pairs only (law 1)
            rec["naive"] = self._metrics(*self._sweep(base, naive, [base_data])[0])
        rec["aligned"] = self._metrics(*swept[0])
        repaired = None
        if has_batchnorm(base.state()):
            repaired = self._sweep(base, aligned, datasets, repair=True)
            rec["aligned_repair"] = self._metrics(*repaired[0])
        if other:
            rec["target_task"] = {"dataset": t.dataset, "aligned": swept[1][1],
                                  "aligned_repair": repaired[1][1] if repaired else None}
        rec["seconds"] = round(time.perf_counter() - start, 3)
        return rec

    def _whole_series(self, spec: CurveSpec, datasets: list[Dataset]
                      ) -> tuple[StateAt, StateAt, dict[str, Any], list]:
        """Naive and aligned whole-model series, the matching record and the aligned series'
        sweep over ``datasets``: weight matching restarted ``restarts`` times, the highest
        objective (sum of inner products of matched weights) chosen."""
        b_state, t_state = self.state_of(spec.base), self.state_of(spec.target)
        spec_b = self.spec_of(spec.base)
        keys = default_tensor_keys(spec_b, b_state)
        runs = []
        for seed in range(self.restarts):
            result = run_job(whole_model_match(b_state, t_state, spec_b, seed=seed))
            permuted = aligned_target(t_state, spec_b, result)
            objective = float(sum((b_state[k].double() * permuted[k].double()).sum()
                                  for k in keys))
            series = lerp_states(b_state, permuted)
            swept = self._sweep(self.model(spec.base), series, datasets)
            losses = swept[0][0]
            runs.append({"seed": seed, "objective": objective, "series": series,
                         "swept": swept, "mean_lmc_loss": mean_loss(losses),
                         "barrier": barrier(self.lambdas, losses)})
        best = max(runs, key=lambda r: (r["objective"], -r["seed"]))
        matching = {"chosen_seed": best["seed"],
                    "restarts": [{k: v for k, v in r.items() if k not in ("series", "swept")}
                                 for r in runs]}
        return lerp_states(b_state, t_state), best["series"], matching, best["swept"]

    # -- iterated merging -----------------------------------------------------------------
    def iterated(self, spec: IteratedSpec) -> dict[str, Any]:
        """Accuracy and loss after each merge (step 0 = the base) of a chain whose steps each
        stay under their own threshold, and each step applied alone to the fresh base."""
        start = time.perf_counter()
        base_model = self.model(spec.base)
        b_spec = self.spec_of(spec.base)
        fresh = self.state_of(spec.base)
        data = self.data(self.dataset_name)
        probe = base_model.with_state(fresh)
        first = evaluate_model(probe, data)
        accs, losses, singles = [first.accuracy], [first.loss], []
        state = fresh
        for k, (donor, lam) in enumerate(zip(spec.donors, spec.lams)):
            t_state, t_spec = self.state_of(donor), self.spec_of(donor)
            step = AssemblyStep(donor, spec.layer, spec.layer, lam, "chain")
            check_step_fits(step, state, b_spec, t_state, t_spec, f"iterated step {k + 1}")
            alignment = run_job(align_step(step, state, b_spec, t_state, t_spec, "chain"))
            state = merge_step(step, alignment, state, b_spec, t_state, t_spec, seed=k)
            probe.module.load_state_dict(state, strict=True)
            r = evaluate_model(probe, data)
            accs.append(r.accuracy)
            losses.append(r.loss)
            # The same step on the fresh base: is each step, alone, under its threshold?
            alone_align = run_job(align_step(step, fresh, b_spec, t_state, t_spec, "chain"))
            alone = merge_step(step, alone_align, fresh, b_spec, t_state, t_spec, seed=k)
            probe.module.load_state_dict(alone, strict=True)
            singles.append(evaluate_model(probe, data).accuracy)
        return {"family": spec.family, "replicate": spec.replicate, "base": spec.base,
                "layer": spec.layer, "donors": list(spec.donors), "lams": list(spec.lams),
                "accuracy": accs, "loss": losses, "single_accuracy": singles,
                "seconds": round(time.perf_counter() - start, 3)}
