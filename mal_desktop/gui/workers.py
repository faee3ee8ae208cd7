"""The one background runner: core generator jobs run here, off the GUI thread.

This is the only module that starts threads. A parentless ``_Worker`` QObject is moved to one
``QThread``; the GUI-thread :class:`JobRunner` hands it a *job factory* through a queued signal,
the worker builds the generator (in its own thread, so even setting up happens off the GUI
thread), drives it and reports back through queued signals. Only plain immutable data crosses:
``ProgressEvent``s, results, strings.

Rules this follows (house_style.md, Threading):
- cancellation is a ``CancelToken`` flag set from the GUI thread; a busy worker never reads
  queued signals, so a ``cancel`` *signal* would arrive too late;
- progress is throttled to ~20 Hz; events that carry a payload (a curve point, one step's
  diagnostics) are partial results and are never dropped; the last event is always delivered;
- one job at a time; on quit the runner cancels and joins the thread, never ``terminate()``.
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref
from collections.abc import Callable, Generator
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from ..core.progress import Cancelled, CancelToken, ProgressEvent, run_job
from .log import describe_exception, log_details

LOG = logging.getLogger("mal_desktop.worker")

JobFactory = Callable[[CancelToken], Generator[ProgressEvent, None, Any]]
THROTTLE_S = 0.05  # ~20 Hz: faster progress updates only cost GUI time, nobody can read them

_runners: "weakref.WeakSet[JobRunner]" = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    """Join any worker still running at interpreter exit (a script that never ran the event
    loop to its end): Qt aborts the process when a running QThread is destroyed."""
    for runner in list(_runners):
        if shiboken6.isValid(runner):
            runner.shutdown()


class _Worker(QObject):
    """Runs jobs in the worker thread. Each signal carries the job id it belongs to."""

    progress = Signal(int, object)
    finished = Signal(int, object)
    failed = Signal(int, str, str)
    cancelled = Signal(int)

    def __init__(self, throttle_s: float) -> None:
        super().__init__()  # no parent: a QObject with a parent cannot be moved to a thread
        self._throttle_s = throttle_s

    @Slot(int, object, object)
    def run(self, job_id: int, factory: JobFactory, token: CancelToken) -> None:
        """Build the job from ``factory`` and drive it to the end (in the worker thread)."""
        job: Generator[ProgressEvent, None, Any] | None = None
        pending: ProgressEvent | None = None
        last_emit = -1e9

        def throttled(event: ProgressEvent) -> None:
            nonlocal pending, last_emit
            now = time.monotonic()
            if event.payload is not None or now - last_emit >= self._throttle_s:
                self.progress.emit(job_id, event)
                last_emit, pending = now, None
            else:
                pending = event  # superseded by a newer event or flushed at the end

        try:
            job = factory(token)
            if not isinstance(job, Generator):
                raise TypeError(f"a job factory must return a generator, got {type(job).__name__}")
            result = run_job(job, throttled)
            if pending is not None:
                self.progress.emit(job_id, pending)
            self.finished.emit(job_id, result)
        except Cancelled:
            self.cancelled.emit(job_id)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the user
            message, details = describe_exception(exc)
            LOG.error("job %d failed: %s\n%s", job_id, message, log_details(exc))
            self.failed.emit(job_id, message, details)
        finally:
            if job is not None and isinstance(job, Generator):
                job.close()


class JobRunner(QObject):
    """Runs one generator job at a time in a background thread.

    Signals (all delivered in the GUI thread): ``progress(ProgressEvent)``,
    ``finished(result)``, ``failed(message, details)``, ``cancelled()``, plus ``started(name)``
    and ``busyChanged(bool)`` for the status bar. Exactly one of finished/failed/cancelled ends
    every started job, after its last progress event; ``is_running()`` is already False then,
    so a handler may start the next job.
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    started = Signal(str)
    busyChanged = Signal(bool)

    _request = Signal(int, object, object)

    def __init__(self, parent: QObject | None = None, throttle_s: float = THROTTLE_S) -> None:
        super().__init__(parent)
        self._throttle_s = throttle_s
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._token: CancelToken | None = None
        self._job_id = 0
        self._running = False
        self._name = ""
        self._t0 = 0.0
        _runners.add(self)
        app = QCoreApplication.instance()
        if app is not None:  # a last line of defence: never leave the thread running at exit
            app.aboutToQuit.connect(self.shutdown)

    # -- public API --------------------------------------------------------------------------
    def start(self, job_factory: JobFactory, name: str) -> bool:
        """Run ``job_factory(cancel_token)`` (a generator job) in the worker thread.

        Parameters: job_factory - called in the worker thread with a fresh CancelToken; name -
        shown to the user ("Loading base model"). Returns False (and does nothing) when a job
        is already running.
        """
        if self._running:
            return False
        self._ensure_thread()
        self._job_id += 1
        self._token = CancelToken()
        self._running = True
        self._name = name
        self._t0 = time.monotonic()
        LOG.info("job %d started: %s", self._job_id, name)
        self._request.emit(self._job_id, job_factory, self._token)
        self.started.emit(name)
        self.busyChanged.emit(True)
        return True

    def cancel(self) -> None:
        """Ask the running job to stop at its next loop boundary (no-op when idle)."""
        if self._running and self._token is not None:
            LOG.info("job %d: cancel requested", self._job_id)
            self._token.cancel()

    def is_running(self) -> bool:
        """True from :meth:`start` until the job's terminal signal is delivered."""
        return self._running

    def is_cancelling(self) -> bool:
        """True while a cancel was requested but the job has not stopped yet."""
        return self._running and self._token is not None and self._token.cancelled

    def job_name(self) -> str:
        """Name of the running (or last) job."""
        return self._name

    def elapsed_s(self) -> float:
        """Seconds since the running (or last) job started."""
        return time.monotonic() - self._t0

    @Slot()
    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Cancel any job, stop the thread and wait for it (call on quit; idempotent).

        Never terminates the thread: a job stops at its next cancel check. If that takes longer
        than ``timeout_ms`` it is logged and waited for anyway (killing a thread in the middle of
        a write or a CUDA call would corrupt files or the driver state).
        """
        was_running = self._running
        self.cancel()
        thread = self._thread
        if thread is not None:
            thread.quit()  # processed by the worker's event loop once the job returns
            if not thread.wait(timeout_ms):
                LOG.warning("worker still busy %d ms after cancel; waiting for it", timeout_ms)
                thread.wait()
        # Only now, with the thread joined, drop the worker: Python owns it, so releasing the
        # last reference deletes it right here - never while it still runs in its thread.
        self._thread = self._worker = None
        self._job_id += 1  # queued signals of the old job are now stale and ignored
        self._running = False
        if was_running:
            self.busyChanged.emit(False)
            self.cancelled.emit()

    # -- internals ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        thread = QThread()
        thread.setObjectName("mal-worker")
        worker = _Worker(self._throttle_s)
        worker.moveToThread(thread)
        # Connected to methods of objects living in the right threads (never lambdas: a
        # lambda slot would run in the emitting thread).
        self._request.connect(worker.run)
        worker.progress.connect(self._on_progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        thread.start()
        self._thread, self._worker = thread, worker

    def _end(self, job_id: int, how: str) -> bool:
        if job_id != self._job_id or not self._running:
            return False
        self._running = False
        LOG.info("job %d %s after %.2f s: %s", job_id, how, self.elapsed_s(), self._name)
        self.busyChanged.emit(False)
        return True

    @Slot(int, object)
    def _on_progress(self, job_id: int, event: ProgressEvent) -> None:
        if job_id == self._job_id and self._running:
            self.progress.emit(event)

    @Slot(int, object)
    def _on_finished(self, job_id: int, result: object) -> None:
        if self._end(job_id, "finished"):
            self.finished.emit(result)

    @Slot(int, str, str)
    def _on_failed(self, job_id: int, message: str, details: str) -> None:
        if self._end(job_id, "failed"):
            self.failed.emit(message, details)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        if self._end(job_id, "cancelled"):
            self.cancelled.emit()
