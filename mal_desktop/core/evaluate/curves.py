"""Interpolation curves: loss and accuracy along the merging factor, naive vs aligned.

A curve evaluates the model at every lambda of a grid for two families of states, the naive
merge (index-aligned, truncated or zero-padded) and the aligned merge. Points are yielded as
they are computed so a GUI can draw them live.
"""

from __future__ import annotations

from typing import Callable, Generator, Sequence

import torch

from ..io.model import LoadedModel
from ..progress import CancelToken, ProgressEvent
from .datasets import Dataset
from .evaluator import fit_inputs, evaluate_model
from .metrics import CurveMetrics, CurvePoint, CurveResult
from .repair import reset_batchnorm_stats

StateAt = Callable[[float], dict[str, torch.Tensor]]


def interpolation_job(base: LoadedModel, data: Dataset, lambdas: Sequence[float],
                      series: dict[str, StateAt], cancel: CancelToken | None = None,
                      epsilon: float = 0.01, split: str = "test", repair: bool = False
                      ) -> Generator[ProgressEvent, None, CurveResult]:
    """Evaluate ``series[name](lam)`` (a state for the base architecture) at every lambda.

    ``series`` must have the keys "naive" and "aligned". Yields stage "curve" events whose payload
    is a :class:`CurvePoint`; returns the :class:`CurveResult` with barrier, mean loss, lambda*.
    ``repair``: re-estimate BatchNorm statistics on the training split at every interior lambda
    (the end points stay the two models as they are).
    """
    repair_x = fit_inputs(base, data.x_train if len(data.x_train) else data.x_test, data.name)
    total = len(lambdas) * len(series)
    done = 0
    repaired = False  # a model without BatchNorm (or a .pt2 graph) has nothing to repair
    names = ("naive", "aligned")
    losses: dict[str, list[float]] = {name: [] for name in names}
    accs: dict[str, list[float]] = {name: [] for name in names}
    # lambda outside, series inside: both curves grow together while the job runs, so a live
    # plot shows naive and aligned side by side instead of one whole curve, then the other
    for i, lam in enumerate(lambdas):
        for name in names:
            if cancel is not None:
                cancel.raise_if_cancelled()
            repair_here = repair and 0.0 < lam < 1.0
            probe = state_probe(base, series[name](float(lam)), writable=repair_here)
            if repair_here:
                repaired = reset_batchnorm_stats(probe.module, repair_x) > 0 or repaired
            result = evaluate_model(probe, data, split, cancel=cancel)
            losses[name].append(result.loss)
            accs[name].append(result.accuracy)
            done += 1
            yield ProgressEvent("curve", done / total,
                                f"{name} lambda={lam:.2f}: loss {result.loss:.4f}, "
                                f"accuracy {result.accuracy:.1%}",
                                CurvePoint(name, i, float(lam), result.loss, result.accuracy))
    curves = {name: CurveMetrics.from_points(lambdas, losses[name], accs[name], epsilon)
              for name in names}
    return CurveResult(tuple(float(x) for x in lambdas), curves["naive"], curves["aligned"],
                       data.name, repaired, per_token=data.text is not None)


def state_probe(base: LoadedModel, state: dict[str, torch.Tensor],
                writable: bool = False) -> LoadedModel:
    """The base architecture holding ``state``, to be evaluated.

    The state's tensors are attached, not copied: a curve of one layer of a 7B model costs that
    layer, and the keys the merge left alone stay the base's (memory-mapped) tensors. A copy of
    the base module (the old way) held a second whole model. ``writable``: the caller modifies
    the probe in place (BatchNorm repair), so it gets its own tensors.
    """
    return base.with_state(state, share=not writable)


def lerp_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> StateAt:
    """lambda -> (1 - lambda) a + lambda b for floating tensors; exact at 0 and 1.

    Integer buffers (BatchNorm's num_batches_tracked) come from ``a``.
    """
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"states differ in keys: {missing}")

    def at(lam: float) -> dict[str, torch.Tensor]:
        if lam == 0.0:
            return dict(a)
        out = {}
        for k, v in a.items():
            if not v.is_floating_point():
                out[k] = v
            elif lam == 1.0:
                out[k] = b[k]
            else:
                out[k] = torch.lerp(v, b[k].to(v.dtype), lam)
        return out

    return at
