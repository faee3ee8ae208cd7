"""The one job queue: long operations wait their turn for the one JobRunner.

Every controller submits its work here (load models, run, export, evaluate, the study, the demo
zoo); the queue starts each job when the runner is free (the engine warm-up runs first), hands
the result to the submitter's ``on_done`` in the GUI thread, and routes failures to the one
error dialog. Cancel stops the running job and drops everything queued behind it (which may
depend on it). Threads are still started only by gui/workers.py.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QWidget

from .log import report_error, report_exception
from .workers import JobFactory, JobRunner

LOG = logging.getLogger("mal_desktop.jobs")


@dataclass
class _Task:
    factory: JobFactory
    name: str
    on_done: Callable[[Any], None]
    on_stop: Callable[[], None] | None = None  # the job was cancelled, failed or dropped
    on_progress: Callable[[Any], None] | None = None  # each progress event of this job


class JobQueue(QObject):
    """Runs submitted jobs one after another on one :class:`JobRunner`.

    Parameters: runner - the runner to drive (default: a new one owned by the queue).
    Attributes: runner; error_parent - the window error dialogs belong to (None: the parent
    set with ``log.set_error_parent``). Signals (GUI thread): ``progress(ProgressEvent)`` of the
    running job; ``busyChanged(bool)``; ``message(str text, int timeout_ms)`` for the status bar
    (queued, cancelling, failed, cancelled; timeout 0 keeps it); ``jobEnded()`` after a job's
    handlers ran (what is enabled may have changed).
    """

    progress = Signal(object)
    busyChanged = Signal(bool)
    message = Signal(str, int)
    jobEnded = Signal()

    def __init__(self, runner: JobRunner | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner if runner is not None else JobRunner(self)
        self.error_parent: QWidget | None = None
        self._queue: deque[_Task] = deque()
        self._current: _Task | None = None
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(self._on_cancelled)
        self.runner.busyChanged.connect(self.busyChanged)

    # -- public API --------------------------------------------------------------------------
    def submit(self, factory: JobFactory, name: str, on_done: Callable[[Any], None],
               on_stop: Callable[[], None] | None = None,
               on_progress: Callable[[Any], None] | None = None) -> None:
        """Run ``factory`` (a job factory) when the runner is free.

        Parameters: name - shown to the user; on_done(result) - called in the GUI thread with
        the job's result; on_stop() - called instead when the job is cancelled, fails, or is
        dropped from the queue; on_progress(ProgressEvent) - each progress event of this job
        (its partial results), in the GUI thread.
        """
        self._queue.append(_Task(factory, name, on_done, on_stop, on_progress))
        if self.runner.is_running():
            self.message.emit(f"Queued: {name}", 6000)
        self._start_next()

    def cancel(self) -> None:
        """Cancel the running job and drop everything queued behind it."""
        if self.runner.is_running():
            self.clear()
            self.runner.cancel()
            self.message.emit(f"Cancelling: {self.runner.job_name()}\u2026", 0)

    def clear(self) -> None:
        """Drop the queued jobs (not the running one); each one's ``on_stop`` is called."""
        queued, self._queue = list(self._queue), deque()
        for task in queued:
            self._stopped(task)

    def is_running(self) -> bool:
        """A job is running."""
        return self.runner.is_running()

    def is_busy(self) -> bool:
        """A job is running or waiting."""
        return self.runner.is_running() or bool(self._queue)

    def shutdown(self) -> None:
        """Drop the queue, cancel the running job and join the worker thread (on quit)."""
        self.clear()
        self.runner.shutdown()

    # -- internals ---------------------------------------------------------------------------
    def _stopped(self, task: _Task | None) -> None:
        if task is not None and task.on_stop is not None:
            try:
                task.on_stop()
            except Exception as exc:  # noqa: BLE001 - a bug in a handler must be seen
                report_exception(exc, f"{task.name} failed", self.error_parent)

    def _start_next(self) -> None:
        if self.runner.is_running() or not self._queue:
            return
        task = self._queue.popleft()
        self._current = task
        self.runner.start(task.factory, task.name)

    @Slot(object)
    def _on_progress(self, event: Any) -> None:
        task = self._current
        if task is not None and task.on_progress is not None:
            task.on_progress(event)
        self.progress.emit(event)

    @Slot(object)
    def _on_finished(self, result: object) -> None:
        task, self._current = self._current, None
        if task is not None:
            try:
                task.on_done(result)
            except Exception as exc:  # noqa: BLE001 - a bug applying a result must be seen
                self.clear()
                report_exception(exc, f"{task.name} failed", self.error_parent)
        self._start_next()
        self.jobEnded.emit()

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        task, self._current = self._current, None
        self._stopped(task)
        self.clear()  # what was queued may depend on the failed job
        name = task.name if task else "Job"
        report_error(message, details, f"{name} failed", self.error_parent)
        self.message.emit(f"{name} failed: {message}", 10000)
        self.jobEnded.emit()

    @Slot()
    def _on_cancelled(self) -> None:
        task, self._current = self._current, None
        self._stopped(task)
        self.message.emit(f"Cancelled: {task.name if task else 'the job'}", 6000)
        self._start_next()
        self.jobEnded.emit()
