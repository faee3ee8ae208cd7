"""Zoo training in pinned worker processes (see ``pinned.py``): the same files on every CPU.

:func:`train_in_workers` starts up to ``workers`` spawned processes under the pinned
environment, hands each a zoo entry at a time and relays what they report: one message per
epoch and the trained weights at the end (as numpy arrays; the caller saves them, so a cancelled
build never leaves a file a worker wrote). Closing the generator (also on cancel) ends the
workers, killing any still training.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import MalError
from ..progress import CancelToken, never_cancelled, run_job
from .pinned import enter_pinned_process, pinned_environ

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class TrainTask:
    """One model to train: the zoo entry and its full architecture config."""

    entry: Any  # ZooEntry (kept untyped: build.py imports this module)
    config: dict[str, Any]
    slot: Any = None  # the caller's tag (where the result goes)


def _serve(conn: Connection) -> None:
    """A worker process: train each task received until None arrives."""
    enter_pinned_process()
    import torch

    from ..arch.families import build_model
    from ..evaluate.datasets import load_dataset
    from .train import train_job

    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            e = task.entry
            torch.manual_seed(e.seed)
            module = build_model(e.family, dict(task.config))
            job = train_job(module, load_dataset(e.dataset), epochs=e.epochs, lr=e.lr,
                            batch_size=e.batch_size, seed=e.seed)
            result = run_job(job, lambda event: conn.send(("epoch", event.payload)))
            state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
            conn.send(("done", state, result))
        except Exception as exc:  # reported to the parent, which raises it
            try:
                pickle.dumps(exc)
                conn.send(("error", exc))
            except Exception:
                conn.send(("error", MalError(f"{type(exc).__name__}: {exc}")))


class _Worker:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True,
                                name="mal-zoo-train")
        with pinned_environ():
            self.proc.start()
        child.close()
        self.task: TrainTask | None = None

    def close(self) -> None:
        if self.task is None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(5)
            except (OSError, EOFError):
                pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def train_in_workers(tasks: Sequence[TrainTask], workers: int = 1,
                     cancel: CancelToken | None = None
                     ) -> Generator[tuple[Any, ...], None, None]:
    """Train ``tasks`` in up to ``workers`` pinned processes; yield as they report:

    ("epoch", task, payload {"epoch", "loss"}) and ("done", task, state: name -> numpy array,
    TrainResult), in completion order. Raises what a worker raised (e.g. DatasetError),
    MalError when a worker dies, Cancelled when ``cancel`` is set (checked every 0.1 s).
    """
    cancel = cancel if cancel is not None else never_cancelled()
    todo = list(tasks)
    pool: list[_Worker] = []
    try:
        pool = [_Worker() for _ in range(max(1, min(workers, len(todo))))] if todo else []
        while todo or any(w.task is not None for w in pool):
            cancel.raise_if_cancelled()
            for w in pool:
                if w.task is None and todo:
                    w.task = todo.pop(0)
                    w.conn.send(w.task)
            busy = {w.conn: w for w in pool if w.task is not None}
            for conn in wait(list(busy), POLL_SECONDS):
                w = busy[conn]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    raise MalError(f"the training worker for {w.task.entry.name} stopped "
                                   f"(exit code {w.proc.exitcode})") from None
                if msg[0] == "error":
                    raise msg[1]
                task = w.task
                if msg[0] == "done":
                    w.task = None
                yield (msg[0], task, *msg[1:])
    finally:
        for w in pool:
            w.close()
