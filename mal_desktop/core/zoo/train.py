"""Training a classifier on a dataset as a cancellable generator job (used by the demo zoo)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..device import compute_device
from ..errors import DatasetError
from ..evaluate.datasets import Dataset
from ..evaluate.evaluator import evaluate_module
from ..progress import CancelToken, ProgressEvent, never_cancelled
from .pinned import deterministic_torch


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_job`.

    test_accuracy / test_loss: scores on the dataset's test split after training.
    epochs: epochs trained. seconds: wall time of the training and the final evaluation.
    train_loss: mean training loss of the last epoch.
    """

    test_accuracy: float
    test_loss: float
    epochs: int
    seconds: float
    train_loss: float = math.nan


def _module_device(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _rng(state: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
    """Run the block with torch's global CPU RNG at ``state``; the caller's state is restored
    after it, and the block's final state is left in the yielded dict under "state"."""
    outer = torch.get_rng_state()
    torch.set_rng_state(state)
    box: dict[str, torch.Tensor] = {}
    try:
        yield box
    finally:
        box["state"] = torch.get_rng_state()
        torch.set_rng_state(outer)


def train_job(module: nn.Module, data: Dataset, *, epochs: int, lr: float = 3e-3,
              batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0,
              cancel: CancelToken | None = None) -> Generator[ProgressEvent, None, TrainResult]:
    """Train ``module`` in place with Adam on cross-entropy over the training split of ``data``.

    The learning rate follows a cosine decay from ``lr`` to zero over all steps, which lets few
    epochs reach a good accuracy. Deterministic for a given seed, whatever ran before or runs
    between the epochs: the training's random state starts from ``seed`` and is kept apart from
    the caller's (whose global torch RNG is left as it was), the data order comes from a private
    ``torch.Generator``, and every epoch and the final evaluation run under
    :func:`~mal_desktop.core.zoo.pinned.deterministic_torch` (one thread, deterministic
    algorithms, oneDNN off; the caller's settings restored between the yields). Bit-identical
    across CPUs only in a pinned process (see ``pinned.py``; the zoo builder trains there).
    Yields one ProgressEvent per epoch (stage "train", payload {"epoch", "loss"}); checks
    ``cancel`` at every epoch and batch boundary.
    Returns a TrainResult with the test-split scores. The module is left in eval mode on the
    device it came from, also when cancelled (then partly trained).
    Raises DatasetError when the dataset has no training samples, Cancelled when cancelled.
    """
    cancel = cancel if cancel is not None else never_cancelled()
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(data.y_train)
    if n == 0:
        raise DatasetError(f"dataset {data.name} has no training samples")
    start_time = time.perf_counter()
    with _rng(torch.get_rng_state()) as rng:
        torch.manual_seed(seed)
    train_rng = rng["state"]
    shuffle_gen = torch.Generator().manual_seed(seed)
    home = _module_device(module)
    device = compute_device()
    # The digits-sized data sets fit on any device at once; moving them once saves per-batch copies.
    x = data.x_train.to(device)
    y = data.y_train.to(device)
    module.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    epoch_loss = math.nan
    try:
        for epoch in range(1, epochs + 1):
            cancel.raise_if_cancelled()
            order = torch.randperm(n, generator=shuffle_gen).to(device)
            module.train()
            total = torch.zeros((), device=device)
            # Grad mode, the thread count and the RNG are the caller's between the yields (a
            # generator's ``with`` would stay entered in the caller's frame across them), so
            # the training's own are entered per epoch.
            with torch.enable_grad(), deterministic_torch(), _rng(train_rng) as rng:
                for start in range(0, n, batch_size):
                    cancel.raise_if_cancelled()
                    idx = order[start:start + batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(module(x[idx]), y[idx])
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    total += loss.detach() * len(idx)
            train_rng = rng["state"]
            module.eval()
            epoch_loss = float(total) / n
            yield ProgressEvent("train", epoch / epochs, f"epoch {epoch}/{epochs} loss {epoch_loss:.4f}",
                                {"epoch": epoch, "loss": epoch_loss})
        cancel.raise_if_cancelled()
        with deterministic_torch():
            result = evaluate_module(module, data.x_test, data.y_test)
    finally:
        module.eval()
        module.to(home)
    return TrainResult(test_accuracy=result.accuracy, test_loss=result.loss, epochs=epochs,
                       seconds=time.perf_counter() - start_time, train_loss=epoch_loss)
