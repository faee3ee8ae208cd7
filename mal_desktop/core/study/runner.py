"""Measuring the study's curves and iterated merges in pinned worker processes, in parallel.

Every measurement is independent of the others, so they run in a ``ProcessPoolExecutor`` of
``workers`` spawned processes, each with one torch thread and the pinned numerics of
``core/zoo/pinned.py`` (the workers start under the pinned environment and check it), so the
numbers are the same whichever worker measured what, on every x86-64 CPU, and whatever ran
before in the calling process. Each worker keeps one :class:`Bench` (its model cache) for all
its measurements. Results come back as plain dicts, keyed and ordered as planned.

A measurement that raises PlanError or AlignmentError is recorded with its error.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

from ..errors import AlignmentError, PlanError
from ..progress import CancelToken, ProgressEvent
from ..zoo.pinned import enter_pinned_process, pinned_environ

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class BenchSettings:
    """What a worker needs to build its bench: the zoo folders and the grid."""

    zoo_dirs: tuple[str, ...]
    grid: int
    epsilon: float
    dataset: str
    restarts: int


_BENCH: dict[BenchSettings, Any] = {}


def bench_for(settings: BenchSettings):
    """This process's bench for ``settings`` (built once)."""
    if settings not in _BENCH:
        from ..zoo.build import load_zoo_index
        from .bench import Bench
        from .zoo import StudyZoo

        zoo = StudyZoo([load_zoo_index(Path(d)) for d in settings.zoo_dirs])
        _BENCH.clear()
        _BENCH[settings] = Bench(zoo, settings.grid, settings.epsilon, settings.dataset,
                                 settings.restarts)
    return _BENCH[settings]


def _curve(settings: BenchSettings, spec) -> dict[str, Any]:
    try:
        return bench_for(settings).curve(spec)
    except (PlanError, AlignmentError) as exc:
        return {"key": spec.key, "base": spec.base, "target": spec.target, "error": str(exc)}


def _iterated(settings: BenchSettings, spec) -> dict[str, Any]:
    try:
        return bench_for(settings).iterated(spec)
    except (PlanError, AlignmentError) as exc:
        return {"family": spec.family, "replicate": spec.replicate, "base": spec.base,
                "error": str(exc)}


def open_pool(workers: int) -> cf.ProcessPoolExecutor:
    """The pool of ``workers`` pinned measuring processes (shut it down when done)."""
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx,
                                  initializer=enter_pinned_process)


def measure_curves(pool: cf.ProcessPoolExecutor, settings: BenchSettings, specs: Sequence,
                   cancel: CancelToken, progress: Callable[[int], ProgressEvent]
                   ) -> Generator[ProgressEvent, None, dict[str, dict[str, Any]]]:
    """Job: every curve of ``specs`` (key -> record, in the order of ``specs``)."""
    out = yield from _measure(pool, _curve, settings, specs, cancel, progress)
    return {s.key: r for s, r in zip(specs, out)}


def measure_iterated(pool: cf.ProcessPoolExecutor, settings: BenchSettings, specs: Sequence,
                     cancel: CancelToken, progress: Callable[[int], ProgressEvent]
                     ) -> Generator[ProgressEvent, None, list[dict[str, Any]]]:
    """Job: every iterated merge of ``specs`` (records in the order of ``specs``)."""
    return (yield from _measure(pool, _iterated, settings, specs, cancel, progress))


def _measure(pool: cf.ProcessPoolExecutor, fn, settings: BenchSettings, specs: Sequence,
             cancel: CancelToken, progress: Callable[[int], ProgressEvent]
             ) -> Generator[ProgressEvent, None, list[dict[str, Any]]]:
    """Run ``fn(settings, spec)`` for every spec in the pool; ``progress(done)`` after each.
    Cancelling drops the measurements not yet started."""
    if not specs:
        return []
    results: list[dict[str, Any] | None] = [None] * len(specs)
    with pinned_environ():  # workers start while these submissions run
        futures = {pool.submit(fn, settings, s): i for i, s in enumerate(specs)}
    pending = set(futures)
    done = 0
    try:
        while pending:
            cancel.raise_if_cancelled()
            finished, pending = cf.wait(pending, POLL_SECONDS, cf.FIRST_COMPLETED)
            for fut in sorted(finished, key=futures.get):
                results[futures[fut]] = fut.result()
                done += 1
                yield progress(done)
    finally:
        for fut in pending:
            fut.cancel()
    return [r for r in results if r is not None]
