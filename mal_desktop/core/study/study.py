"""`mal study`: reproduce the laws of mal_method.md §8 on the demo zoo, as data and a report.

The job builds (or reuses) the demo zoo and the study's extra models, measures every planned
curve and iterated merge once, judges each law from those numbers (``laws.py``) and writes
``study.json`` (all numbers) and ``report.md`` into the output folder. The figures the report
shows are drawn from ``study.json`` by ``mal_desktop.figures`` (Qt, so outside the core).
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Generator

from ... import __version__
from .. import jsonio
from ..device import device_label
from ..errors import AlignmentError, MalError, PlanError
from ..io.files import atomic_write_text
from ..progress import CancelToken, Job, ProgressEvent, map_events, never_cancelled, sub_job
from ..zoo.build import ZooIndex, build_zoo_job, default_zoo_dir
from . import laws
from .bench import Bench, CurveSpec, IteratedSpec
from .plans import (HeatmapCell, plan_heatmaps, plan_iterated, plan_positions, plan_ratios,
                    plan_whole, plan_width_cases)
from .report import render_report
from .zoo import BASE_DATASET, EXTRAS_DIR, StudyZoo, study_entries

STUDY_VERSION = 1
DATA_NAME = "study.json"
REPORT_NAME = "report.md"


@dataclass(frozen=True)
class StudySettings:
    """Sizes of the study. ``for_mode`` gives the default and the ``--small`` ones."""

    grid: int = 11
    epsilon: float = 0.01
    pairs_per_cell: int = 2
    iterated_steps: int = 6
    iterated_lambda: float = 0.2

    @staticmethod
    def for_mode(small: bool) -> "StudySettings":
        return StudySettings(grid=6, pairs_per_cell=1, iterated_steps=3) if small \
            else StudySettings()


@dataclass(frozen=True)
class StudyResult:
    """Where the study wrote its files, and its data (the content of study.json)."""

    out_dir: Path
    data_path: Path
    report_path: Path
    data: dict[str, Any]

    @property
    def verdicts(self) -> dict[int, str]:
        return {law["law"]: law["verdict"] for law in self.data["laws"]}


def _merge_specs(specs: list[CurveSpec]) -> list[CurveSpec]:
    """One spec per curve key, in first-seen order; target_task if any asked for it."""
    out: dict[str, CurveSpec] = {}
    for s in specs:
        if s.key in out:
            if s.target_task and not out[s.key].target_task:
                out[s.key] = replace(out[s.key], target_task=True)
        else:
            out[s.key] = s
    return list(out.values())


def _heatmap(cells, curves: dict[str, dict], families: list[str]) -> dict[str, Any]:
    def value(keys) -> float | None:
        vals = [curves[k]["aligned"]["mean_lmc_loss"] for k in keys
                if k in curves and "error" not in curves[k]]
        return sum(vals) / len(vals) if vals else None

    grid = {"same": [[None] * len(families) for _ in families],
            "different": [[None] * len(families) for _ in families]}
    for cell in cells:
        i, j = families.index(cell.base_family), families.index(cell.target_family)
        grid["same"][i][j] = value(cell.same)
        grid["different"][i][j] = value(cell.different)
    return {"families": families, **grid,
            "cells": [asdict(c) for c in cells]}


def _method_notes(settings: StudySettings) -> list[str]:
    return [
        f"Every curve is evaluated on the {BASE_DATASET} test split (the base models' task) at "
        f"{settings.grid} evenly spaced lambdas from 0 to 1.",
        "Naive merge: index-aligned (the target's first units, zero-padded or truncated). "
        "Aligned merge: chain alignment of the layer prefix (local two-sided alignment where "
        "the two prefixes differ, e.g. across families); whole-model curves use whole-model "
        "weight matching.",
        "Layers: first = the first weight layer, last = the head, middle = the weight layer "
        "with both sides hidden nearest the middle of the network.",
        "Heatmaps merge the head (the one layer every pair of families can merge: the class "
        f"outputs stay fixed, the input side is aligned); up to {settings.pairs_per_cell} "
        "same-data target(s) per cell.",
        f"lambda* is the largest grid lambda up to which base-task accuracy stays within "
        f"{settings.epsilon:.0%} of the base's.",
        f"Iterated merges: {settings.iterated_steps} steps at lambda "
        f"{settings.iterated_lambda:g}, donors taken in turn, each step aligned to the current "
        "merged base.",
        "The study adds models to the demo zoo (folder study-extras): a digits-rot90 model of "
        "every family lacking one, and MLPs with unequal hidden widths for the nine width "
        "cases.",
        "Training is seeded; another torch version or thread count trains slightly different "
        "models, so checks decided by less than one grid step can flip between set-ups.",
    ]


def study_job(zoo_dir: Path | str | None = None, out_dir: Path | str = "mal-study",
              small: bool = False, cancel: CancelToken | None = None,
              settings: StudySettings | None = None
              ) -> Generator[ProgressEvent, None, StudyResult]:
    """Build or reuse the zoo, measure every law, write study.json and report.md.

    zoo_dir: the demo-zoo folder (default :func:`default_zoo_dir`); missing models are trained
        there, the study's extra models in its ``study-extras`` subfolder.
    out_dir: folder for study.json and report.md (created).
    small: a tiny zoo and a coarse grid, for tests (well under a minute).
    settings: override the sizes (grid, pairs per heatmap cell, iterated steps).
    Yields ProgressEvents (stages "zoo" and "study"); returns the StudyResult.
    Raises MalError when the zoo cannot be built or the output cannot be written; Cancelled.
    A curve that cannot be measured is recorded with its error and listed in the report.
    """
    cancel = cancel if cancel is not None else never_cancelled()
    settings = settings or StudySettings.for_mode(small)
    zoo_dir = _zoo_folder(zoo_dir, out_dir, small)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    built: dict[str, int] = {"trained": 0, "reused": 0}
    zoo = yield from _build_zoo(zoo_dir, small, cancel, built)
    zoo_seconds = time.perf_counter() - t0
    bench = Bench(zoo, settings.grid, settings.epsilon, BASE_DATASET, cancel)

    yield ProgressEvent("study", 0.35, "planning the measurements")
    plan = _Plan.of(zoo, bench, settings)
    n = len(plan.curves) + len(plan.iterated)
    t1 = time.perf_counter()
    curves = yield from _measure_curves(plan.curves, zoo, bench, n, cancel)
    curve_seconds = time.perf_counter() - t1
    t2 = time.perf_counter()
    iterated = yield from _measure_iterated(plan.iterated, bench, len(plan.curves), n, cancel)
    iterated_seconds = time.perf_counter() - t2

    data = _study_data(zoo, zoo_dir, bench, settings, small, plan, curves, iterated)
    data["timing"] = {"zoo_seconds": round(zoo_seconds, 2), "zoo_trained": built["trained"],
                      "zoo_reused": built["reused"], "curves": len(plan.curves),
                      "curve_seconds": round(curve_seconds, 2),
                      "iterated_seconds": round(iterated_seconds, 2),
                      "total_seconds": round(time.perf_counter() - t0, 2)}
    cancel.raise_if_cancelled()
    data_path, report_path = _write_study(out, data)
    yield ProgressEvent("study", 1.0, f"wrote {report_path}", None)
    return StudyResult(out, data_path, report_path, data)


def _zoo_folder(zoo_dir: Path | str | None, out_dir: Path | str, small: bool) -> Path:
    """The zoo folder the study builds into or reuses (see :func:`study_job`)."""
    if zoo_dir is None:
        # The small zoo reuses demo-zoo names with other training settings: never build it in
        # the demo zoo's folder, or it would replace those models and rewrite zoo.json.
        zoo_dir = Path(out_dir) / "small-zoo" if small else default_zoo_dir()
    return Path(zoo_dir)


def _build_zoo(zoo_dir: Path, small: bool, cancel: CancelToken, built: dict[str, int]
               ) -> Generator[ProgressEvent, None, StudyZoo]:
    """Job: build (or reuse) the demo-zoo models and the study's extras; progress 0 to 0.35.

    Counts the models trained and reused into ``built``.
    """
    base_entries, extra_entries = study_entries(small)
    index = yield from _counting(sub_job(build_zoo_job(zoo_dir, base_entries, cancel),
                                         0.0, 0.25), built)
    extras = yield from _counting(sub_job(build_zoo_job(zoo_dir / EXTRAS_DIR, extra_entries,
                                                        cancel), 0.25, 0.35), built)
    return StudyZoo([index, extras])


@dataclass(frozen=True)
class _Plan:
    """Every measurement of the study: the curves (each key once) and the iterated merges, and
    how the parts of the report use them."""

    whole: list[CurveSpec]
    heat_cells: list[HeatmapCell]
    cases: list[dict]
    ratios: list[CurveSpec]
    pos_rows: list[dict]
    iterated: list[IteratedSpec]
    curves: list[CurveSpec]

    @staticmethod
    def of(zoo: StudyZoo, bench: Bench, settings: StudySettings) -> "_Plan":
        """List every part's measurements (plans.py) and merge the curves by key."""
        whole = plan_whole(zoo)
        heat_specs, heat_cells = plan_heatmaps(zoo, bench, settings.pairs_per_cell)
        case_specs, cases = plan_width_cases(zoo, bench)
        ratio_specs = plan_ratios(zoo, bench)
        pos_specs, pos_rows = plan_positions(zoo, bench)
        iter_specs = plan_iterated(zoo, bench, settings.iterated_steps, settings.iterated_lambda)
        curves = _merge_specs(whole + heat_specs + case_specs + ratio_specs + pos_specs)
        return _Plan(whole, heat_cells, cases, ratio_specs, pos_rows, iter_specs, curves)


def _measure_curves(specs: list[CurveSpec], zoo: StudyZoo, bench: Bench, n: int,
                    cancel: CancelToken) -> Generator[ProgressEvent, None, dict[str, dict]]:
    """Job: measure every curve (key -> record); a curve that cannot be measured is recorded
    with its error. Progress from 0.35 over the first of ``n`` measurements."""
    curves: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(specs):
        cancel.raise_if_cancelled()
        try:
            record = bench.curve(spec)
        except (PlanError, AlignmentError) as exc:
            record = {"key": spec.key, "base": spec.base, "target": spec.target,
                      "error": str(exc)}
        record["base_seed"] = zoo.models[spec.base].seed
        record["target_seed"] = zoo.models[spec.target].seed
        curves[spec.key] = record
        yield ProgressEvent("study", 0.35 + 0.6 * (i + 1) / n,
                            f"curve {i + 1}/{len(specs)}: {spec.key}", None)
    return curves


def _measure_iterated(specs: list[IteratedSpec], bench: Bench, done: int, n: int,
                      cancel: CancelToken) -> Generator[ProgressEvent, None, list[dict]]:
    """Job: run every iterated merge (an error is recorded, not raised); progress continues
    after ``done`` of ``n`` measurements."""
    iterated = []
    for k, it in enumerate(specs):
        cancel.raise_if_cancelled()
        try:
            iterated.append(bench.iterated(it))
        except (PlanError, AlignmentError) as exc:
            iterated.append({"family": it.family, "base": it.base, "error": str(exc)})
        yield ProgressEvent("study", 0.35 + 0.6 * (done + k + 1) / n,
                            f"iterated merges {k + 1}/{len(specs)}: {it.family}", None)
    return iterated


def _study_data(zoo: StudyZoo, zoo_dir: Path, bench: Bench, settings: StudySettings,
                small: bool, plan: _Plan, curves: dict[str, dict], iterated: list[dict]
                ) -> dict[str, Any]:
    """The content of study.json (less its timing): settings, zoo, measurements, verdicts."""
    families = list(zoo.families)
    data: dict[str, Any] = {
        "version": __version__, "study_version": STUDY_VERSION, "small": small,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": _device_text(), "dataset": BASE_DATASET, "epsilon": settings.epsilon,
        "lambdas": list(bench.lambdas), "settings": asdict(settings),
        "zoo": {"dir": str(zoo_dir), "families": families,
                "models": [m.to_json() for m in zoo.models.values()]},
        "curves": list(curves.values()),
        "heatmaps": _heatmap(plan.heat_cells, curves, families),
        "width_cases": plan.cases, "ratios": [s.key for s in plan.ratios],
        "positions": plan.pos_rows, "iterated": iterated,
        "whole": [s.key for s in plan.whole],
        "method": _method_notes(settings),
    }
    data["laws"] = [laws.law1(curves), laws.law2(curves), laws.law3(curves),
                    laws.law4(curves, data["ratios"], plan.cases),
                    laws.law5(curves, plan.pos_rows), laws.law6(iterated, settings.epsilon)]
    return data


def _write_study(out: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    """Write study.json and report.md into ``out``; return their paths. Raises MalError."""
    data_path = out / DATA_NAME
    report_path = out / REPORT_NAME
    try:
        atomic_write_text(data_path, jsonio.dumps(data, indent=1) + "\n")
        atomic_write_text(report_path, render_report(data))
    except OSError as exc:
        raise MalError(f"{out}: cannot write the study ({exc.strerror or exc})") from None
    return data_path, report_path


def _counting(job: Job[ZooIndex], counts: dict[str, int]) -> Job[ZooIndex]:
    """Re-yield a zoo build's events, counting models trained and reused into ``counts``."""
    def count(event: ProgressEvent) -> ProgressEvent:
        payload = event.payload if isinstance(event.payload, dict) else {}
        if payload.get("cached"):
            counts["reused"] += 1
        elif "test_accuracy" in payload:
            counts["trained"] += 1
        return event

    return map_events(job, count)


def _device_text() -> str:
    """The compute device and, on CPU, how many cores this process may use and torch uses."""
    import torch

    label = device_label()
    if label == "CPU":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 0
        threads = torch.get_num_threads()
        label += f" ({cores} cores available, {threads} torch thread{'s' if threads != 1 else ''})"
    return label
