"""How every ``mal`` command talks: progress on stderr, one result on stdout (text or ``--json``)."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from ..core.jsonio import dumps
from ..core.progress import run_job


class Progress:
    """Prints job progress to stderr: a redrawn bar on a terminal, sparse lines otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, event) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        final = event.fraction >= 1.0
        if not final and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        frac = event.fraction if event.fraction == event.fraction else 0.0
        if self.tty:
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {frac:5.1%} {event.message[:80]:<80}")
            if final:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"{frac:5.1%} {event.message}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def run(job, args) -> Any:
    """Drive a job with progress on stderr; Ctrl+C cancels cooperatively."""
    progress = Progress(getattr(args, "quiet", False))
    try:
        return run_job(job, progress)
    finally:
        progress.done()


def emit(args, obj: dict[str, Any], text: Callable[[], str]) -> None:
    if args.json:
        # one NaN policy everywhere (core/jsonio): non-finite numbers are null, strict JSON
        sys.stdout.write(dumps(obj) + "\n")
    else:
        sys.stdout.write(text() + "\n")
