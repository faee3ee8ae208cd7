"""How responsive is the GUI while a real job runs? (a measurement, not a test)

Starts the app offscreen (or on the current display with ``--display``), opens the small demo
zoo (built into a cache folder on the first run), and runs a real Run: assemble a 2-step plan
and sweep lambda for step 1, naive vs aligned, with the curve and diagnostics panels updating
live. Meanwhile a QTimer probe ticks every 10 ms on the GUI thread and records the gaps
between ticks: the largest gap is the longest the GUI froze. The same probe runs for the same
time with no job, side by side, so the number can be judged against an idle event loop.

    python benchmarks/gui_responsiveness.py [--grid 21] [--repeat 3]

Prints the max and 99th-percentile stall (idle vs running), the job time, and PASS when the
worst stall while running is below 50 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIMIT_MS = 50.0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=21, help="lambda points on the curve")
    p.add_argument("--repeat", type=int, default=3, help="runs to measure")
    p.add_argument("--display", action="store_true", help="use the real display, not offscreen")
    p.add_argument("--switch-ms", type=float, default=None,
                   help="override the interpreter's thread switch interval (ms) to compare")
    p.add_argument("--zoo", type=Path, default=Path(tempfile.gettempdir()) / "mal-bench-zoo",
                   help="folder for the small demo zoo (built once)")
    return p.parse_args()


class Probe:
    """Ticks every 10 ms on the GUI thread; records gaps between consecutive ticks (ms)."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.gaps: list[float] = []
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.gaps.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(1000 * (now - self._last))
        self._last = now

    def stats(self) -> tuple[float, float, int]:
        gaps = sorted(self.gaps) or [0.0]
        # A 10 ms timer's gap is 10 ms when nothing blocks; the stall is what goes beyond.
        return gaps[-1], gaps[int(0.99 * (len(gaps) - 1))], len(self.gaps)


def wait_until(condition, timeout_s: float) -> None:
    """Run the event loop until ``condition()`` holds (checked every 20 ms)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.perf_counter() + timeout_s
    check = QTimer()
    check.setInterval(20)

    def poll() -> None:
        if condition() or time.perf_counter() > deadline:
            loop.quit()

    check.timeout.connect(poll)
    check.start()
    loop.exec()
    check.stop()
    if not condition():
        raise SystemExit(f"timed out after {timeout_s:.0f} s")


def main() -> int:
    args = parse()
    if not args.display:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from mal_desktop.core.progress import CancelToken, run_job
    from mal_desktop.gui.tasks import build_demo_zoo_job

    print(f"small demo zoo in {args.zoo} (built on first use) ...", flush=True)
    index = run_job(build_demo_zoo_job(CancelToken(), folder=args.zoo, small=True))

    from mal_desktop.core.merge.plan import AssemblyStep
    from mal_desktop.gui.app import create_app
    from mal_desktop.gui.main_window import MainWindow
    from mal_desktop.gui.settings import Settings
    from mal_desktop.gui.undo import AddStepCommand

    app = create_app()  # noqa: F841 - kept alive for the whole run
    if args.switch_ms is not None:
        sys.setswitchinterval(args.switch_ms / 1000)
    tmp = tempfile.TemporaryDirectory()
    settings = Settings(Path(tmp.name) / "bench.ini")
    settings.demo_offered = True
    window = MainWindow(settings)
    window.show()
    window.start_up()
    wait_until(lambda: window.workspace is not None and not window.jobs.runner.is_running(), 120)
    ws = window.workspace
    window.files.open_paths([str(index.path_of(n))
                             for n in ("mlp-w64-s0", "mlp-w32-s1", "mlp-w32-s0")])
    wait_until(lambda: ws.base is not None and len(ws.zoo) == 2
               and not window.jobs.runner.is_running(), 120)
    ws.push(AddStepCommand(ws.plan, AssemblyStep("mlp-w32-s1", "layers.1", "layers.1", 0.5)))
    ws.push(AddStepCommand(ws.plan, AssemblyStep("mlp-w32-s0", "layers.0", "layers.0", 0.3)))
    ws.select_step(0)
    window.grid_spin.setValue(args.grid)
    print(f"switch interval {1000 * sys.getswitchinterval():g} ms; "
          f"device: {window.session.engine.device}; plan: {len(ws.plan.steps)} steps "
          f"(base {ws.base.name}, zoo {', '.join(ws.zoo)}); curve grid {args.grid}", flush=True)

    probe = Probe()
    busy_max, busy_p99, job_times, idle_rows = [], [], [], []
    for i in range(args.repeat):
        window.runs.last_run = None
        probe.start()
        t0 = time.perf_counter()
        window.runs.run()
        wait_until(lambda: window.runs.last_run is not None
                   or not window.jobs.runner.is_running(), 600)
        job_s = time.perf_counter() - t0
        probe.stop()
        if window.runs.last_run is None:
            raise SystemExit("the run failed; see the log")
        mx, p99, n = probe.stats()
        busy_max.append(mx)
        busy_p99.append(p99)
        job_times.append(job_s)
        # The same probe, same duration, no job: the event loop's own noise.
        probe.start()
        end = time.perf_counter() + job_s
        wait_until(lambda: time.perf_counter() >= end, job_s + 5)
        probe.stop()
        idle_rows.append(probe.stats())
        print(f"run {i + 1}: job {job_s:.2f} s; GUI stall max {mx:.1f} ms, p99 {p99:.1f} ms "
              f"({n} ticks) | idle max {idle_rows[-1][0]:.1f} ms, p99 {idle_rows[-1][1]:.1f} ms",
              flush=True)

    worst = max(busy_max)
    idle_worst = max(r[0] for r in idle_rows)
    print(f"\nmax GUI stall while running: {worst:.1f} ms (idle: {idle_worst:.1f} ms; "
          f"ratio {worst / max(idle_worst, 1e-9):.2f}); p99 {max(busy_p99):.1f} ms")
    print(f"job time (assemble + {args.grid}-point curve): median "
          f"{sorted(job_times)[len(job_times) // 2]:.2f} s")
    print("PASS" if worst < LIMIT_MS else f"FAIL: a stall of {worst:.1f} ms >= {LIMIT_MS:.0f} ms")
    window.session.mark_clean()
    window.close()
    tmp.cleanup()
    return 0 if worst < LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
