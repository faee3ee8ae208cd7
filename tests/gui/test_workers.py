"""JobRunner: finished, failed, cancelled, throttled progress, one job at a time, clean shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator

import pytest

from mal_desktop.core.errors import PlanError
from mal_desktop.core.progress import CancelToken, ProgressEvent
from mal_desktop.gui.workers import JobRunner

pytestmark = pytest.mark.gui


@pytest.fixture
def runner(qtbot) -> Iterator[JobRunner]:
    r = JobRunner()
    yield r
    r.shutdown()


def counting_job(n: int, delay: float = 0.0, payload_every: int = 0):
    """A job yielding n events (optionally some with payloads) and returning n."""

    def factory(cancel: CancelToken) -> Generator[ProgressEvent, None, int]:
        for i in range(n):
            cancel.raise_if_cancelled()
            if delay:
                time.sleep(delay)
            payload = ("point", i) if payload_every and i % payload_every == 0 else None
            yield ProgressEvent("count", (i + 1) / n, f"{i + 1} of {n}", payload)
        return n

    return factory


def test_finished_delivers_result_in_gui_thread(qtbot, runner: JobRunner) -> None:
    threads: list[str] = []
    seen: list[ProgressEvent] = []

    def job(cancel: CancelToken):
        threads.append(threading.current_thread().name)
        yield ProgressEvent("x", 0.5, "half")
        return {"answer": 42}

    runner.progress.connect(seen.append)
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        assert runner.start(job, "answer")
        assert runner.is_running()
    assert blocker.args == [{"answer": 42}]
    assert not runner.is_running()
    assert [e.message for e in seen] == ["half"]
    # The job body ran off the GUI (main) thread.
    assert threads and threads[0] != threading.main_thread().name


def test_failure_gives_readable_message_and_details(qtbot, runner: JobRunner) -> None:
    def bad(cancel: CancelToken):
        yield ProgressEvent("x", 0.1)
        raise PlanError("step 2: layer 'fc9' does not exist in the base")

    def buggy(cancel: CancelToken):
        yield ProgressEvent("x", 0.1)
        return 1 / 0

    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.start(bad, "bad")
    message, details = blocker.args
    assert message == "step 2: layer 'fc9' does not exist in the base"
    # A plain user error is complete in its message: no traceback behind "Show Details...".
    assert details == "" and "Traceback" not in message

    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.start(buggy, "buggy")
    message, details = blocker.args
    assert "ZeroDivisionError" in message and "\n" not in message
    assert "ZeroDivisionError" in details


def test_factory_that_is_not_a_generator_fails(qtbot, runner: JobRunner) -> None:
    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.start(lambda cancel: 5, "not a job")
    assert "generator" in blocker.args[0]


def test_cancel_mid_way(qtbot, runner: JobRunner) -> None:
    seen: list[ProgressEvent] = []
    runner.progress.connect(seen.append)
    finished: list[object] = []
    runner.finished.connect(finished.append)
    runner.start(counting_job(1000, delay=0.005), "slow")
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=5000)
    with qtbot.waitSignal(runner.cancelled, timeout=5000):
        runner.cancel()
        assert runner.is_cancelling()
    assert not runner.is_running()
    assert finished == []
    assert seen[-1].fraction < 1.0


def test_progress_throttled_but_last_event_delivered(qtbot, runner: JobRunner) -> None:
    seen: list[ProgressEvent] = []
    runner.progress.connect(seen.append)
    with qtbot.waitSignal(runner.finished, timeout=10000):
        runner.start(counting_job(20000), "fast")
    assert 1 <= len(seen) < 2000  # 20000 events in well under 5 s at ~20 Hz
    assert seen[-1].message == "20000 of 20000" and seen[-1].fraction == 1.0
    fractions = [e.fraction for e in seen]
    assert fractions == sorted(fractions)  # order kept


def test_payload_events_are_never_dropped(qtbot, runner: JobRunner) -> None:
    seen: list[ProgressEvent] = []
    runner.progress.connect(seen.append)
    with qtbot.waitSignal(runner.finished, timeout=10000):
        runner.start(counting_job(5000, payload_every=100), "points")
    payloads = [e.payload for e in seen if e.payload is not None]
    assert payloads == [("point", i) for i in range(0, 5000, 100)]


def test_only_one_job_at_a_time(qtbot, runner: JobRunner) -> None:
    gate = threading.Event()

    def blocking(cancel: CancelToken):
        while not gate.wait(0.01):
            cancel.raise_if_cancelled()
            yield ProgressEvent("wait", float("nan"))
        return "first"

    assert runner.start(blocking, "first")
    assert not runner.start(counting_job(3), "second")
    assert runner.job_name() == "first"
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        gate.set()
    assert blocker.args == ["first"]
    # Free again: a handler of finished may start the next job straight away.
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        assert runner.start(counting_job(3), "second")
    assert blocker.args == [3]


def test_shutdown_cancels_and_joins(qtbot) -> None:
    runner = JobRunner()
    stopped = threading.Event()

    def endless(cancel: CancelToken):
        try:
            while True:
                cancel.raise_if_cancelled()
                time.sleep(0.002)
                yield ProgressEvent("spin", float("nan"))
        finally:
            stopped.set()

    runner.start(endless, "endless")
    qtbot.wait(50)
    thread = runner._thread
    assert thread is not None and thread.isRunning()
    with qtbot.waitSignal(runner.cancelled, timeout=1000):
        runner.shutdown()
    assert stopped.is_set()
    assert thread.isFinished()
    assert not runner.is_running()
    runner.shutdown()  # idempotent
