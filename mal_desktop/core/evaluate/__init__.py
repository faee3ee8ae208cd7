"""Datasets, evaluation, interpolation curves and the MAL metrics.

Plug-in API: ``from mal_desktop.core.evaluate import register_metric, register_dataset,
register_stage`` (with the types they hand over: SampleScores, CurveSeries, Dataset, Samples)
and what runs them: ``run_pipeline``, ``samples_of``, ``PipelineSpec``, ``load_dataset``.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "register_metric": "metric_registry", "get_metric": "metric_registry",
    "metric_names": "metric_registry", "SampleScores": "metric_registry",
    "CurveSeries": "metric_registry",
    "register_dataset": "datasets", "load_dataset": "datasets",
    "available_datasets": "datasets", "Dataset": "datasets",
    "register_stage": "pipeline", "PipelineSpec": "pipeline", "Samples": "pipeline",
    "run_pipeline": "pipeline", "samples_of": "pipeline", "log_softmax": "pipeline",
}
__all__ = sorted(_EXPORTS)

# Imported on first use, so importing one light module (metric_registry) does not load torch.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # type checkers and IDEs do not run __getattr__
    from .datasets import Dataset, available_datasets, load_dataset, register_dataset
    from .metric_registry import (CurveSeries, SampleScores, get_metric, metric_names,
                                  register_metric)
    from .pipeline import (PipelineSpec, Samples, log_softmax, register_stage, run_pipeline,
                           samples_of)
