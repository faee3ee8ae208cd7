"""Long work as generator jobs: progress events, cooperative cancellation.

A job is a generator that yields :class:`ProgressEvent` and ``return``s its result. It calls
``cancel.raise_if_cancelled()`` at every loop boundary. The CLI and the GUI worker drive the same
generators (``run_job`` here, ``gui.workers`` there).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a job when its :class:`CancelToken` was set."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    stage: short machine-readable name ("align", "curve", "train", ...).
    fraction: overall progress in [0, 1] (NaN when unknown).
    message: one human-readable line.
    payload: plain data describing a partial result (a curve point, one layer's cost);
        must be immutable or a fresh copy, since it may cross threads.
    """

    stage: str
    fraction: float
    message: str = ""
    payload: Any = field(default=None, compare=False)


class CancelToken:
    """A cancel flag safe to set from any thread (a busy worker never reads queued signals)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


Job = Generator[ProgressEvent, None, T]

_ambient = threading.local()  # the token of the job this thread runs, in a cancellable() block


@contextmanager
def cancellable(token: CancelToken) -> Iterator[None]:
    """Within the block, plain functions deep below a job (reading every tensor of a large
    model: its NaN check, its statistics) see ``token`` through :func:`check_cancelled`, with
    no parameter threaded through every loader on the way. Per thread; blocks nest."""
    previous = getattr(_ambient, "token", None)
    _ambient.token = token
    try:
        yield
    finally:
        _ambient.token = previous


def check_cancelled() -> None:
    """Raise Cancelled when the token of the enclosing :func:`cancellable` block was set
    (nothing happens outside one)."""
    token = getattr(_ambient, "token", None)
    if token is not None:
        token.raise_if_cancelled()


def run_job(job: Job[T], on_event: Callable[[ProgressEvent], None] | None = None) -> T:
    """Drive ``job`` to completion, passing each event to ``on_event``; return its result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def map_events(job: Job[T], transform: Callable[[ProgressEvent], ProgressEvent]) -> Job[T]:
    """Re-yield the events of ``job`` passed through ``transform``; return the job's result.

    The one pump for a job that runs a sub-job and reports its progress as its own: rescaled
    into its share of the whole (:func:`sub_job`), relabelled to its own stage, or counted on
    the way. ``transform`` may have side effects; it sees every event once, in order.
    Closing the returned job closes ``job`` too, as ``yield from`` would.
    """
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            yield transform(event)
    finally:
        job.close()


def sub_job(job: Job[T], start: float, end: float, prefix: str = "") -> Job[T]:
    """Re-yield the events of ``job`` with fractions mapped into [start, end] and ``prefix``
    before each message (which step of a plan is running); return its result.

    An unknown fraction (NaN) stays unknown.
    """
    def rescale(event: ProgressEvent) -> ProgressEvent:
        frac = event.fraction
        if frac == frac:  # not NaN
            frac = start + (end - start) * frac
        return ProgressEvent(event.stage, frac, prefix + event.message, event.payload)

    return map_events(job, rescale)


def never_cancelled() -> CancelToken:
    """A token nobody sets (for callers that do not offer cancel)."""
    return CancelToken()
