"""Progress plumbing: the one event pump (map_events) and the rescaling built on it (sub_job)."""

from __future__ import annotations

import math

from mal_desktop.core.progress import Job, ProgressEvent, map_events, run_job, sub_job


def _job(fractions: list[float], result: str = "done") -> Job[str]:
    for i, f in enumerate(fractions):
        yield ProgressEvent("inner", f, f"step {i}", {"i": i})
    return result


def test_map_events_transforms_every_event_and_returns_the_result() -> None:
    seen: list[ProgressEvent] = []

    def relabel(event: ProgressEvent) -> ProgressEvent:
        return ProgressEvent("outer", event.fraction, event.message.upper(), event.payload)

    result = run_job(map_events(_job([0.0, 0.5, 1.0]), relabel), seen.append)
    assert result == "done"
    assert [(e.stage, e.fraction, e.message, e.payload) for e in seen] == [
        ("outer", 0.0, "STEP 0", {"i": 0}), ("outer", 0.5, "STEP 1", {"i": 1}),
        ("outer", 1.0, "STEP 2", {"i": 2})]


def test_map_events_closes_the_inner_job_when_closed() -> None:
    closed: list[bool] = []

    def inner() -> Job[None]:
        try:
            yield ProgressEvent("inner", 0.0)
            yield ProgressEvent("inner", 1.0)
        finally:
            closed.append(True)

    outer = map_events(inner(), lambda e: e)
    next(outer)
    outer.close()
    assert closed == [True]


def test_sub_job_maps_fractions_into_its_share_and_keeps_unknown_ones() -> None:
    seen: list[ProgressEvent] = []
    result = run_job(sub_job(_job([0.0, math.nan, 1.0], "r"), 0.25, 0.75), seen.append)
    assert result == "r"
    assert seen[0].fraction == 0.25 and math.isnan(seen[1].fraction) and seen[2].fraction == 0.75
    assert [e.stage for e in seen] == ["inner"] * 3
