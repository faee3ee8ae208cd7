"""The study's measuring bench: interpolation curves and iterated merges over one model cache.

The engine's ``model_curve_job`` loads and analyses its two models on every call; the study
measures a few hundred curves over a few dozen models, so the bench keeps one
:class:`~mal_desktop.core.jobs.ModelCache` (each file loaded and its permutation spaces
discovered once) and runs the same engine steps (``align_step``, ``merge_step``,
``interpolation_job``, ``weight_matching``) on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..evaluate.curves import interpolation_job
from ..evaluate.datasets import Dataset, load_dataset
from ..evaluate.evaluator import evaluate_model
from ..evaluate.metric_registry import CurveSeries, compute_curve_metrics
from ..jobs import ModelCache, curve_series
from ..merge.assemble import align_step, check_step_fits, merge_step
from ..merge.plan import AssemblyStep
from ..progress import CancelToken, never_cancelled, run_job
from .zoo import StudyZoo

Layers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CurveSpec:
    """One curve to measure: ``target`` merged into ``base`` (whole model when ``layers`` is
    empty, else those (source, base) layer pairs at one lambda); ``target_task``: also measure
    the aligned merge on the target's own dataset."""

    base: str
    target: str
    layers: Layers = ()
    target_task: bool = False

    @property
    def key(self) -> str:
        pairs = ",".join(f"{s}>{d}" for s, d in self.layers) or "whole"
        return f"{self.base}|{self.target}|{pairs}"


@dataclass(frozen=True)
class IteratedSpec:
    """``steps`` merges into ``base``'s ``layer``, donors taken in turn, each at ``lam``."""

    family: str
    base: str
    donors: tuple[str, ...]
    layer: str
    lam: float
    steps: int


class Bench:
    """Runs curve and iterated-merge measurements on the study zoo."""

    def __init__(self, zoo: StudyZoo, grid: int, epsilon: float, dataset: str,
                 cancel: CancelToken | None = None) -> None:
        self.zoo = zoo
        self.lambdas = [i / (grid - 1) for i in range(grid)]
        self.epsilon = epsilon
        self.dataset_name = dataset
        self.cancel = cancel if cancel is not None else never_cancelled()
        self.cache = ModelCache()
        self._data: dict[str, Dataset] = {}

    def data(self, name: str) -> Dataset:
        if name not in self._data:
            self._data[name] = load_dataset(name)
        return self._data[name]

    def _path(self, name: str) -> str:
        return str(self.zoo.models[name].path)

    def spec_of(self, name: str):
        """The permutation spec of a zoo model (discovered once)."""
        return self.cache.spec(self._path(name))

    def state_of(self, name: str) -> dict[str, torch.Tensor]:
        return self.cache.model(self._path(name)).state()

    # -- curves ---------------------------------------------------------------------------
    def curve(self, spec: CurveSpec) -> dict[str, Any]:
        """Measure one curve; returns its plain-data record (see :func:`_record`)."""
        start = time.perf_counter()
        base = self.cache.model(self._path(spec.base))
        found = curve_series(self.cache, self._path(spec.base), self._path(spec.target),
                             align=None if spec.layers else "weight",
                             layers=list(spec.layers) if spec.layers else None,
                             cancel=self.cancel)
        series, align, note = found.as_dict(), found.align, found.note
        result = run_job(interpolation_job(base, self.data(self.dataset_name), self.lambdas,
                                           series, self.cancel, self.epsilon))
        target_acc = None
        if spec.target_task:
            tdata = self.zoo.models[spec.target].dataset
            on_target = run_job(interpolation_job(base, self.data(tdata), self.lambdas,
                                                  series, self.cancel, self.epsilon))
            target_acc = {"dataset": tdata, "naive": list(on_target.naive.accuracy),
                          "aligned": list(on_target.aligned.accuracy)}
        return self._record(spec, result, align, note, target_acc, time.perf_counter() - start)

    def _record(self, spec: CurveSpec, result, align: str, note: str,
                target_acc: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
        b, t = self.zoo.models[spec.base], self.zoo.models[spec.target]
        rec: dict[str, Any] = {
            "key": spec.key, "kind": "layer" if spec.layers else "whole",
            "base": b.name, "target": t.name, "layers": [list(p) for p in spec.layers],
            "base_family": b.family, "target_family": t.family,
            "base_width": b.width, "target_width": t.width,
            "base_dataset": b.dataset, "target_dataset": t.dataset,
            "dataset": self.dataset_name, "align": align, "note": note,
            "seconds": round(seconds, 3)}
        for name in ("naive", "aligned"):
            c = getattr(result, name)
            series = CurveSeries(tuple(self.lambdas), c.loss, c.accuracy,
                                 tuple(target_acc[name]) if target_acc else None, self.epsilon)
            wanted = ["barrier", "mean_lmc_loss", "threshold"]
            if target_acc:
                wanted.append("target_task_accuracy")
            values = compute_curve_metrics(wanted, series)
            rec[name] = {"loss": list(c.loss), "accuracy": list(c.accuracy), **values}
            if target_acc:
                rec[name]["target_accuracy"] = list(target_acc[name])
        if target_acc:
            rec["target_task_dataset"] = target_acc["dataset"]
        return rec

    # -- iterated merging -----------------------------------------------------------------
    def iterated(self, spec: IteratedSpec) -> dict[str, Any]:
        """Accuracy and loss after each of ``spec.steps`` aligned merges (step 0 = the base),
        and for comparison each step applied alone to the fresh base."""
        start = time.perf_counter()
        base_model = self.cache.model(self._path(spec.base))
        b_spec = self.spec_of(spec.base)
        fresh = self.state_of(spec.base)
        data = self.data(self.dataset_name)
        probe = base_model.with_state(fresh)
        first = evaluate_model(probe, data)
        accs, losses, singles, donors = [first.accuracy], [first.loss], [], []
        state = fresh
        for k in range(spec.steps):
            self.cancel.raise_if_cancelled()
            donor = spec.donors[k % len(spec.donors)]
            t_state, t_spec = self.state_of(donor), self.spec_of(donor)
            step = AssemblyStep(donor, spec.layer, spec.layer, spec.lam, "chain")
            check_step_fits(step, state, b_spec, t_state, t_spec, f"iterated step {k + 1}")
            alignment = run_job(align_step(step, state, b_spec, t_state, t_spec, "chain",
                                           self.cancel))
            state = merge_step(step, alignment, state, b_spec, t_state, t_spec, seed=k)
            probe.module.load_state_dict(state, strict=True)
            r = evaluate_model(probe, data)
            accs.append(r.accuracy)
            losses.append(r.loss)
            donors.append(donor)
            if k < len(spec.donors):
                # The same step on the fresh base: was each step, alone, under its threshold?
                alone_align = run_job(align_step(step, fresh, b_spec, t_state, t_spec, "chain",
                                                 self.cancel))
                alone = merge_step(step, alone_align, fresh, b_spec, t_state, t_spec, seed=k)
                probe.module.load_state_dict(alone, strict=True)
                singles.append({"donor": donor, "accuracy": evaluate_model(probe, data).accuracy})
        return {"family": spec.family, "base": spec.base, "layer": spec.layer, "lam": spec.lam,
                "donors": donors, "accuracy": accs, "loss": losses, "single_steps": singles,
                "seconds": round(time.perf_counter() - start, 3)}
