"""`mal study`: reproduce the laws of mal_method.md §8 on the demo zoo, as data and a report.

The job builds (or reuses) the demo zoo and the study's extra models (every configuration at
``seeds`` seeds, trained bit-identically in pinned workers), plans every curve and iterated merge
(``plans.py``), measures them in parallel pinned workers (``runner.py``; curves already measured
on the same model files come from the study cache), judges each law by stated tests against
seed-to-seed noise (``laws.py``, ``stats.py``), states what the merges gain (``gains.py``) and
writes ``study.json`` (all numbers), ``report.md`` and ``merges.md`` into the output folder. The
figures the report shows are drawn from ``study.json`` by ``mal_desktop.figures`` (Qt, so
outside the core).
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generator

from ... import __version__
from .. import jsonio
from ..errors import MalError
from ..io.files import atomic_write_text
from ..io.hashing import file_sha256
from ..progress import CancelToken, Job, ProgressEvent, map_events, never_cancelled, sub_job
from ..zoo.build import ZooIndex, build_zoos_job, default_zoo_dir
from ..zoo.pinned import numerics
from . import laws
from .bench import Bench, CurveSpec, IteratedSpec
from .cache import CurveCache
from .gains import gains
from .plans import Planner
from .report import render_merges, render_report
from .runner import BenchSettings, measure_curves, measure_iterated, open_pool
from .zoo import BASE_DATASET, EXTRAS_DIR, StudyZoo, config_id, study_entries

STUDY_VERSION = 4
DATA_NAME = "study.json"
REPORT_NAME = "report.md"
MERGES_NAME = "merges.md"


@dataclass(frozen=True)
class StudySettings:
    """Sizes of the study. ``for_mode`` gives the default and the ``--small`` ones.

    seeds: zoo seeds per configuration (replicates of every measurement). restarts: whole-model
    weight-matching restarts. step_fraction: an iterated step's lambda as a fraction of that
    step's own lambda*. workers: measuring (and training) processes.
    """

    grid: int = 11
    epsilon: float = 0.01
    seeds: int = 3
    iterated_steps: int = 6
    step_fraction: float = 0.5
    restarts: int = 3
    workers: int = 2

    @staticmethod
    def for_mode(small: bool) -> "StudySettings":
        return StudySettings(grid=6, seeds=2, iterated_steps=3, restarts=2) if small \
            else StudySettings()


@dataclass(frozen=True)
class StudyResult:
    """Where the study wrote its files, and its data (the content of study.json)."""

    out_dir: Path
    data_path: Path
    report_path: Path
    data: dict[str, Any]

    @property
    def verdicts(self) -> dict[str, str]:
        return {law["law"]: law["verdict"] for law in self.data["laws"]}


@dataclass(frozen=True)
class _Plan:
    """Every measurement of the study and how the parts of the report use them."""

    parts: dict[str, list[dict]]
    curves: list[CurveSpec]


def study_job(zoo_dir: Path | str | None = None, out_dir: Path | str = "mal-study",
              small: bool = False, cancel: CancelToken | None = None,
              settings: StudySettings | None = None
              ) -> Generator[ProgressEvent, None, StudyResult]:
    """Build or reuse the zoo, measure every law, write study.json, report.md and merges.md.

    zoo_dir: the demo-zoo folder (default :func:`default_zoo_dir`); missing models are trained
        there, the study's extra models in its ``study-extras`` subfolder, measured curves are
        cached in its ``study-cache`` subfolder.
    out_dir: folder for the study's files (created).
    small: a tiny zoo, two seeds and a coarse grid, for tests (seconds once trained).
    settings: override the sizes (grid, seeds, steps, restarts, workers).
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
    zoo = yield from _build_zoo(zoo_dir, small, settings, cancel, built)
    zoo_seconds = time.perf_counter() - t0
    seeds = [s for s in zoo.seeds() if s < settings.seeds]
    if len(seeds) < 2:
        raise MalError(f"the study needs at least two seeds per configuration; the zoo in "
                       f"{zoo_dir} has {seeds}")
    bench = Bench(zoo, settings.grid, settings.epsilon, BASE_DATASET, settings.restarts)
    bs = BenchSettings((str(zoo_dir), str(zoo_dir / EXTRAS_DIR)), settings.grid,
                       settings.epsilon, BASE_DATASET, settings.restarts)

    yield ProgressEvent("study", 0.35, "planning the measurements")
    plan = _plan(Planner(zoo, bench, seeds), settings)
    t1 = time.perf_counter()
    cache = CurveCache(zoo_dir / "study-cache", zoo, bs, STUDY_VERSION)
    pool = open_pool(settings.workers)
    try:
        curves = yield from _measure_curves(pool, plan.curves, cache, bs, cancel)
        curve_seconds = time.perf_counter() - t1
        _annotate(curves, zoo)
        t2 = time.perf_counter()
        it_specs = _iterated_specs(plan.parts["iterated"], curves, settings.step_fraction)
        iterated = yield from measure_iterated(
            pool, bs, it_specs, cancel,
            lambda k: ProgressEvent("study", 0.9 + 0.08 * k / len(it_specs),
                                    f"iterated merges {k}/{len(it_specs)}"))
        iterated_seconds = time.perf_counter() - t2
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    data = _study_data(zoo, zoo_dir, bench, settings, small, seeds, plan, curves, iterated)
    data["timing"] = {"zoo_seconds": round(zoo_seconds, 2), "zoo_trained": built["trained"],
                      "zoo_reused": built["reused"], "curves": len(plan.curves),
                      "curves_cached": cache.hits, "curve_seconds": round(curve_seconds, 2),
                      "iterated": len(it_specs), "iterated_seconds": round(iterated_seconds, 2),
                      "workers": settings.workers,
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


def _build_zoo(zoo_dir: Path, small: bool, settings: StudySettings, cancel: CancelToken,
               built: dict[str, int]) -> Generator[ProgressEvent, None, StudyZoo]:
    """Job: build (or reuse) the demo-zoo models and the study's extras; progress 0 to 0.35.

    Counts the models trained and reused into ``built``.
    """
    base_entries, extra_entries = study_entries(small, settings.seeds)
    indices = yield from _counting(sub_job(build_zoos_job(
        [(zoo_dir, base_entries), (zoo_dir / EXTRAS_DIR, extra_entries)], cancel,
        settings.workers), 0.0, 0.35), built)
    return StudyZoo(indices)


def _plan(planner: Planner, settings: StudySettings) -> _Plan:
    """List every part's measurements (plans.py) and merge the curves by key."""
    parts: dict[str, list[dict]] = {}
    specs: dict[str, CurveSpec] = {}
    for name, (s, rows) in (("whole", planner.whole()), ("heatmaps", planner.heatmaps()),
                            ("width_cases", planner.width_cases()),
                            ("ratios", planner.ratios()), ("positions", planner.positions()),
                            ("iterated", planner.iterated(settings.iterated_steps))):
        parts[name] = rows
        for spec in s:
            specs.setdefault(spec.key, spec)
    return _Plan(parts, list(specs.values()))


def _measure_curves(pool: Any, specs: list[CurveSpec], cache: CurveCache, bs: BenchSettings,
                    cancel: CancelToken) -> Generator[ProgressEvent, None, dict[str, dict]]:
    """Job: every curve (key -> record, in plan order): from the cache, else measured (and
    then cached); progress from 0.35 to 0.9."""
    curves = {s.key: cache.get(s) for s in specs}
    todo = [s for s in specs if curves[s.key] is None]
    n = len(todo)
    yield ProgressEvent("study", 0.35, f"{len(specs) - n} of {len(specs)} curves cached")
    measured = yield from measure_curves(
        pool, bs, todo, cancel,
        lambda k: ProgressEvent("study", 0.35 + 0.55 * k / max(1, n), f"curve {k}/{n}"))
    for key, record in measured.items():
        cache.put(key, record)
        curves[key] = record
    return curves


def _annotate(curves: dict[str, dict], zoo: StudyZoo) -> None:
    """Add each curve's model facts: family, width, data, seed of both models, and the pair's
    configuration (models less seeds, plus the layers)."""
    for r in curves.values():
        b, t = zoo.models[r["base"]], zoo.models[r["target"]]
        layers = ",".join(f"{s}>{d}" for s, d in r.get("layers", [])) or "whole"
        r.update({"base_family": b.family, "target_family": t.family,
                  "base_width": b.width, "target_width": t.width,
                  "base_dataset": b.dataset, "target_dataset": t.dataset,
                  "base_seed": b.seed, "target_seed": t.seed,
                  "config": f"{config_id(b)}<-{config_id(t)}|{layers}"})


def _iterated_specs(rows: list[dict], curves: dict[str, dict], fraction: float
                    ) -> list[IteratedSpec]:
    """The chains with each step's lambda: ``fraction`` of its donor's own lambda*; donors
    whose lambda* is 0 (no step under the threshold on the grid) are left out."""
    out = []
    for row in rows:
        donors, lams = [], []
        for donor, key in zip(row["donors"], row["threshold_keys"]):
            r = curves.get(key)
            if r is None or "error" in r or r["aligned"]["threshold"] <= 0:
                continue
            donors.append(donor)
            lams.append(round(fraction * r["aligned"]["threshold"], 6))
        row["used_donors"], row["lams"] = donors, lams
        if donors:
            out.append(IteratedSpec(row["family"], row["replicate"], row["base"],
                                    tuple(donors), row["layer"], tuple(lams)))
    return out


def _study_data(zoo: StudyZoo, zoo_dir: Path, bench: Bench, settings: StudySettings,
                small: bool, seeds: list[int], plan: _Plan, curves: dict[str, dict],
                iterated: list[dict]) -> dict[str, Any]:
    """The content of study.json (less its timing): settings, zoo, measurements, verdicts."""
    families = list(zoo.families)
    step = bench.lambdas[1] - bench.lambdas[0]
    used = sorted({r[k] for r in curves.values() for k in ("base", "target")}
                  | {d for it in iterated for d in it.get("donors", [])})
    parts = plan.parts
    data: dict[str, Any] = {
        "version": __version__, "study_version": STUDY_VERSION, "small": small,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "numerics": numerics(), "dataset": BASE_DATASET, "epsilon": settings.epsilon,
        "lambdas": list(bench.lambdas), "settings": asdict(settings), "seeds": seeds,
        "zoo": {"dir": str(zoo_dir), "families": families,
                "models": [{**m.to_json(), "sha256": file_sha256(m.path)}
                           for m in zoo.models.values() if m.name in used]},
        "curves": list(curves.values()), "parts": parts, "iterated": iterated,
        "heatmaps": _heatmap(parts["heatmaps"], curves, families),
    }
    data["laws"] = [laws.law1(curves, step), laws.law2(curves, step),
                    laws.law3(curves, parts["whole"], parts["heatmaps"]),
                    laws.law4a(curves, parts["ratios"], step),
                    laws.law4b(curves, parts["ratios"], parts["width_cases"], step),
                    laws.law5(curves, parts["positions"]),
                    laws.law6(iterated, settings.epsilon)]
    accuracy = {m.name: m.test_accuracy for m in zoo.models.values()}
    data["gains"] = gains(curves, list(bench.lambdas), accuracy)
    return data


def _heatmap(rows: list[dict], curves: dict[str, dict], families: list[str]) -> dict[str, Any]:
    """Mean aligned LMC loss per (base family, target family) cell over the replicates."""
    grid: dict[str, list[list[Any]]] = {w: [[None] * len(families) for _ in families]
                                        for w in ("same", "different")}
    for which in grid:
        for i, a in enumerate(families):
            for j, b in enumerate(families):
                vals = [curves[row[which]]["aligned"]["mean_lmc_loss"] for row in rows
                        if row["base_family"] == a and row["target_family"] == b
                        and row[which] and "error" not in curves[row[which]]]
                grid[which][i][j] = sum(vals) / len(vals) if vals else None
    return {"families": families, **grid}


def _write_study(out: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    """Write study.json, report.md and merges.md into ``out``; return the first two paths.
    Raises MalError."""
    data_path = out / DATA_NAME
    report_path = out / REPORT_NAME
    try:
        atomic_write_text(data_path, jsonio.dumps(data, indent=1) + "\n")
        atomic_write_text(report_path, render_report(data))
        atomic_write_text(out / MERGES_NAME, render_merges(data))
    except OSError as exc:
        raise MalError(f"{out}: cannot write the study ({exc.strerror or exc})") from None
    return data_path, report_path


def _counting(job: Job[list[ZooIndex]], counts: dict[str, int]) -> Job[list[ZooIndex]]:
    """Re-yield a zoo build's events, counting models trained and reused into ``counts``."""
    def count(event: ProgressEvent) -> ProgressEvent:
        payload = event.payload if isinstance(event.payload, dict) else {}
        if payload.get("cached"):
            counts["reused"] += 1
        elif "test_accuracy" in payload:
            counts["trained"] += 1
        return event

    return map_events(job, count)


__all__ = ["StudyResult", "StudySettings", "study_job"]
