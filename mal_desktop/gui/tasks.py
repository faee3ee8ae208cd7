"""The GUI's background jobs: core generator jobs composed for what the window does.

Each function takes the ``cancel`` token first, so ``functools.partial(fn, **arguments)`` is a
job factory for :meth:`JobRunner.start`. They run in the worker thread: core modules (torch,
scipy) are imported inside them, never on the GUI start-up path, and they return plain data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.progress import CancelToken, ProgressEvent, sub_job

if TYPE_CHECKING:  # heavy at run time; the functions import them in the worker
    from ..core.io.model import LoadedModel
    from ..core.jobs import AssemblyResult
    from ..core.merge.plan import AssemblyPlan
    from ..core.evaluate.metrics import CurveResult
    from ..core.zoo.build import ZooIndex
    from .workspace import ModelEntry

Job = Generator[ProgressEvent, None, Any]


@dataclass(frozen=True)
class EngineInfo:
    """What the warm-up job found: the compute device and the datasets that can load."""

    device: str
    datasets: dict[str, str]
    seconds: float


def warmup_job(cancel: CancelToken) -> Job:
    """Import the engine (torch, scipy, core.jobs) in the worker; report device and datasets."""
    t0 = time.perf_counter()
    yield ProgressEvent("start", float("nan"), "Starting the engine\u2026")
    import torch

    from ..core import jobs  # noqa: F401 - the import is the work: torch, scipy, the aligners
    from ..core.device import device_label
    from ..core.evaluate.datasets import available_datasets

    cores = os.cpu_count() or 2
    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() >= cores > 1:
        # Leave one core to the GUI thread: spinning intra-op threads on every core make the
        # window stutter while a job runs (measured by benchmarks/gui_responsiveness.py).
        torch.set_num_threads(cores - 1)
    cancel.raise_if_cancelled()
    yield ProgressEvent("start", float("nan"), "Preparing the model tracer\u2026")
    _prime_tracer()
    return EngineInfo(device_label(), dict(available_datasets()), time.perf_counter() - t0)


def _prime_tracer() -> None:
    """Discover a tiny model once so the tracer's one-time set-up happens now.

    Long-lived objects made here, before the GUI calls ``gc.freeze()``, are never walked by the
    garbage collector again; made later, every full collection walks them while holding the
    GIL. Discovery records models up to 50 M parameters (graph/record.py, milliseconds), so
    this primes the recorder; torch.export's set-up (~150k objects, 1-1.5 s of importing its
    compiler stack) is left to the first model that must be exported (a larger one, activation
    matching): paying it at every start would cost every user that second. Not cached, or a
    warm spec cache would skip the priming. A failure only costs that optimisation, so it is
    logged, not raised.
    """
    import logging

    from ..core.graph.discover import discover_spec
    from ..core.io.model import LoadedModel
    from ..core.arch.families import build_model

    config = {"input_shape": [1, 4, 4], "num_classes": 3, "widths": [4]}
    try:
        module = build_model("mlp", config)
        discover_spec(LoadedModel(module, {"kind": "family", "family": "mlp", "config": config},
                                  (1, 4, 4), 3), cache=False)
    except Exception:  # noqa: BLE001 - an optimisation; the real load reports real errors
        logging.getLogger("mal_desktop.tasks").warning("tracer warm-up failed", exc_info=True)


@dataclass(frozen=True)
class LoadRequest:
    """One model file to open: as the base (role "base") or as zoo model ``name``; ``output``:
    for a model returning several outputs, the one chosen as the logits (None: not chosen, the
    first)."""

    role: str
    name: str
    path: str
    output: int | None = None


@dataclass(frozen=True)
class EarlyEntry:
    """A progress payload of ``load_models_job``: an entry the window shows before the job
    ends. First a large model built from its headers (``entry.weights_read`` False: module on
    the meta device, no statistics), so its tree shows and steps can be planned while its
    weights are read; then the loaded model, to take that preview's place at once rather than
    when the other requested models are loaded too. ``role`` as in :class:`LoadRequest`."""

    role: str
    entry: "ModelEntry"


def load_models_job(cancel: CancelToken, requests: Sequence[LoadRequest]) -> Job:
    """Load each requested file and build its layer tree, all or nothing (a project's or a
    demo's models, which only make sense together).

    A model above ``core.jobs.HEADER_FIRST_PARAMETERS`` (smaller ones load in about a second:
    a preview would only flash) whose architecture its headers describe (a Hugging Face
    folder, a mal file) is first built from the headers alone and sent as an
    :class:`EarlyEntry` payload - its tree in seconds - before its weights are read, checked
    and summarised (a minute for a 7B folder), then sent again loaded; discovery reuses the
    spaces found for the preview (spec cache). Returns a tuple of (role, ModelEntry) in request order.
    Raises ModelFileError (a MalError) naming the file that cannot be read; nothing is
    returned for the others in that case.
    """
    loaded = []
    n = max(1, len(requests))
    for i, req in enumerate(requests):
        loaded.append((yield from _load_one(cancel, req, i, n)))
    yield ProgressEvent("load", 1.0, f"Loaded {len(loaded)} model{'s' if len(loaded) != 1 else ''}")
    return tuple(loaded)


@dataclass(frozen=True)
class LoadedEach:
    """What :func:`load_each_job` returns: the models that loaded, in request order, and for
    each file that did not, (path, the problem in one line)."""

    entries: tuple
    failed: tuple[tuple[str, str], ...]


def load_each_job(cancel: CancelToken, requests: Sequence[LoadRequest]) -> Job:
    """:func:`load_models_job` for files opened one beside the other (the command line, a drop,
    Add Zoo Models): a file that cannot be read is reported and the others load. One bad
    file in three used to discard the good ones, and the files after it were never tried.
    Cancelling still stops them all. Returns a :class:`LoadedEach`."""
    from ..core.errors import MalError

    loaded, failed = [], []
    n = max(1, len(requests))
    for i, req in enumerate(requests):
        try:
            loaded.append((yield from _load_one(cancel, req, i, n)))
        except MalError as exc:
            failed.append((str(req.path), str(exc)))
    yield ProgressEvent("load", 1.0, f"Loaded {len(loaded)} of {len(requests)} models"
                        if failed else f"Loaded {len(loaded)} model{'s' if len(loaded) != 1 else ''}")
    return LoadedEach(tuple(loaded), tuple(failed))


def _load_one(cancel: CancelToken, req: LoadRequest, i: int, n: int) -> Job:
    """Job: request ``i`` of ``n`` loaded, with its tree: (role, ModelEntry)."""
    from ..core.graph.tree import build_layer_tree
    from ..core.io.files import load_model
    from ..core.progress import cancellable
    from .workspace import ModelEntry

    cancel.raise_if_cancelled()
    label = req.name  # a folder's name, not its config.json picked in the dialog
    yield ProgressEvent("load", i / n, f"Reading the headers of {label}\u2026")
    preview = _header_entry(req)
    if preview is not None:
        yield ProgressEvent("load", (i + 0.1) / n, f"Reading the weights of {label}\u2026",
                            payload=EarlyEntry(req.role, preview))
    with cancellable(cancel):  # seen between the tensors of the NaN check
        model = load_model(req.path, output=req.output)
    yield ProgressEvent("load", (i + 0.6) / n, f"Reading the layers of {label}\u2026")
    with cancellable(cancel):  # and of the statistics
        tree = build_layer_tree(model)
    entry = (req.role, ModelEntry(req.name, str(req.path), model, tree, req.output,
                                  _output_shapes(model)))
    if preview is not None:
        yield ProgressEvent("load", (i + 1) / n, f"Loaded {label}", payload=EarlyEntry(*entry))
    return entry


def _header_entry(req: LoadRequest) -> "ModelEntry | None":
    """The entry of ``req``'s model built from its headers, when it is large enough to be worth
    showing early and its headers describe it; None otherwise, and when the preview fails (the
    weights' load then reports what is wrong, or finds the spaces by running the model)."""
    import logging

    from ..core.errors import MalError
    from ..core.graph.tree import build_layer_tree
    from ..core.jobs import large_from_headers
    from .workspace import ModelEntry

    try:
        model = large_from_headers(req.path, req.output)
        if model is None:
            return None
        tree = build_layer_tree(model)
    except MalError as exc:
        logging.getLogger("mal_desktop.tasks").info("no preview of %s: %s", req.path, exc)
        return None
    return ModelEntry(req.name, str(req.path), model, tree, req.output, weights_read=False)


def _output_shapes(model: "LoadedModel") -> tuple:
    """Per output of a model returning several, its shape without the batch axis (what the
    output choice shows); empty for one output or when the shapes are not recorded."""
    if model.outputs <= 1 or model.program is None:
        return ()
    from ..core.io.pt2_io import program_output_shapes

    return tuple(program_output_shapes(model.program))


@dataclass(frozen=True)
class RunResult:
    """Result of Run: the assembly (merged model + step diagnostics) and the curve of one step."""

    assembly: "AssemblyResult"
    curve: "CurveResult"
    step_index: int
    data: str
    seconds: float


def run_step_job(cancel: CancelToken, plan: "AssemblyPlan", step_index: int, data: str,
                 grid: int, models: Mapping[str, "LoadedModel"],
                 specs: Mapping[str, Any] | None = None) -> Job:
    """Assemble the whole plan, then sweep lambda for step ``step_index`` (naive vs aligned).

    ``plan`` must be a private copy (the GUI keeps editing its own). ``models`` / ``specs``:
    the loaded models and their permutation specs by plan path. Progress: assembly 0-40 %,
    curve 40-100 %; payloads StepDiagnostics and CurvePoint pass through.
    """
    import torch

    from ..core.jobs import assemble_job, plan_curve_job

    t0 = time.perf_counter()
    with torch.no_grad():  # thread-local: entered here, in the worker
        # The layer trees already hold every spec: passing them saves a torch.export per model
        # per job, pure Python that holds the GIL and would stall the GUI thread.
        assembly = yield from sub_job(assemble_job(plan, cancel, models=models, specs=specs),
                                      0.0, 0.4)
        curve = yield from sub_job(plan_curve_job(plan, step_index, data, grid, cancel,
                                                  models=models, specs=specs), 0.4, 1.0)
    return RunResult(assembly, curve, step_index, data, time.perf_counter() - t0)


def save_merged_job(cancel: CancelToken, plan: "AssemblyPlan", out: Path,
                    models: Mapping[str, "LoadedModel"],
                    specs: Mapping[str, Any] | None = None) -> Job:
    """Assemble ``plan`` and save the merged model (with provenance) atomically to ``out``."""
    import torch

    from ..core.jobs import assemble_job

    with torch.no_grad():
        result = yield from assemble_job(plan, cancel, models=models, out=Path(out), specs=specs)
    return result


# -- demo zoo ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoStatus:
    """Where the demo zoo lives and its index when every demo model is already built."""

    folder: Path
    index: "ZooIndex | None"


def demo_status_job(cancel: CancelToken, folder: Path | None = None) -> Job:
    """Check whether the demo zoo is built in ``folder`` (default: the zoo cache folder)."""
    from ..core.errors import MalError
    from ..core.project.demo import demo_zoo_ready
    from ..core.zoo.build import default_zoo_dir, load_zoo_index

    folder = Path(folder) if folder is not None else default_zoo_dir()
    yield ProgressEvent("demo", float("nan"), f"Looking for the demo zoo in {folder}\u2026")
    try:
        index = load_zoo_index(folder)
    except MalError:
        return DemoStatus(folder, None)
    return DemoStatus(folder, index if demo_zoo_ready(index) else None)


def build_demo_zoo_job(cancel: CancelToken, folder: Path, small: bool = False) -> Job:
    """Build (or reuse) the demo models in ``folder``; returns the ZooIndex.

    Models already listed in an existing index are kept in it (their files are reused, not
    retrained), so building the demo never shrinks a zoo built with the CLI. ``small``: the
    tiny test zoo (seconds) instead of the demo models.
    """
    from ..core.errors import MalError
    from ..core.project.demo import demo_zoo_entries
    from ..core.zoo.build import build_zoo_job, default_zoo, load_zoo_index

    if small:
        entries = default_zoo(small=True)
    else:
        try:
            existing = load_zoo_index(folder).names()
        except MalError:
            existing = []
        entries = demo_zoo_entries(existing)
    return (yield from build_zoo_job(Path(folder), entries, cancel))


def lm_demo_status_job(cancel: CancelToken, folder: Path | None = None,
                       small: bool = False) -> Job:
    """Check whether the language demo zoo is built in ``folder`` (default: the language zoo
    cache folder); ``small``: the tiny test recipe's models instead of the demo's."""
    from ..core.errors import MalError
    from ..core.project.demo import lm_demo_ready
    from ..core.zoo.build import load_zoo_index
    from ..core.zoo.language import default_lm_zoo, default_lm_zoo_dir

    folder = Path(folder) if folder is not None else default_lm_zoo_dir()
    yield ProgressEvent("demo", float("nan"),
                        f"Looking for the language demo zoo in {folder}\u2026")
    try:
        index = load_zoo_index(folder)
    except MalError:
        return DemoStatus(folder, None)
    names = [e.name for e in default_lm_zoo(small)]
    return DemoStatus(folder, index if lm_demo_ready(index, names) else None)


def build_lm_demo_zoo_job(cancel: CancelToken, folder: Path, small: bool = False) -> Job:
    """Build (or reuse) the language demo models in ``folder``; returns the ZooIndex.

    Each model folder is written whole (a temporary folder, then a rename) and ``zoo.json``
    after it, so a cancelled build leaves the models it finished and nothing half-written;
    the next build reuses them. ``small``: three tiny models (seconds), for tests.
    """
    from ..core.zoo.language import build_lm_zoo_job, default_lm_zoo

    return (yield from build_lm_zoo_job(Path(folder), default_lm_zoo(small), cancel))


# -- evaluation matrix and the MAL study -------------------------------------------------------
MERGED_REF = "plan:current"  # row id of the merged model in the evaluation matrix
MERGED_NAME = "merged (current plan)"


def _file_ref(text: str, output: int) -> Any:
    """The evaluation-matrix reference of model file ``text`` scored on output ``output``."""
    from dataclasses import replace

    from ..core.toolkit.model_refs import FileRef, parse_model_ref

    ref = parse_model_ref(text)
    return replace(ref, output=output) if isinstance(ref, FileRef) else ref


def _merged_ref(plan: "AssemblyPlan", models: Mapping[str, "LoadedModel"] | None,
                specs: Mapping[str, Any] | None) -> Any:
    """The evaluation-matrix reference of the current plan's merged model.

    A plan reference: hashed from the steps and the files' contents like ``mal eval-matrix
    --models plan.json`` (so GUI and CLI share cached cells, and a re-run computes nothing, not
    even the assembly), assembled only when a cell misses the cache, from the models already in
    memory. Raises PlanError when a model of the plan is not on disk (the assembly's pre-flight
    reads file headers, so such a plan cannot be assembled either).
    """
    from ..core.errors import PlanError
    from ..core.project.merged import missing_model_files, used_zoo
    from ..core.toolkit.model_refs import plan_ref

    # Only the zoo models the steps use: an unused one in the cache key would invalidate the
    # merged row whenever another zoo model is opened.
    plan = used_zoo(plan)
    missing = missing_model_files(plan)
    if missing:
        raise PlanError(f"the merged model needs the plan's models on disk; {missing[0]} is "
                        "not")
    return plan_ref(plan, models, specs, name=MERGED_NAME, text=MERGED_REF)


def eval_matrix_task(cancel: CancelToken, refs: Sequence[str], datasets: Sequence[str],
                     cache_dir: Path | None = None, metrics: Sequence[str] | None = None,
                     plan: "AssemblyPlan | None" = None,
                     models: Mapping[str, "LoadedModel"] | None = None,
                     specs: Mapping[str, Any] | None = None,
                     outputs: Mapping[str, int] | None = None) -> Job:
    """Evaluate every model of ``refs`` on every dataset (core ``eval_matrix_job``).

    refs: model reference texts (model files, ``zoo:NAME``, plan ``.json``); the text
    :data:`MERGED_REF` stands for ``plan`` (a private copy) assembled from ``models`` /
    ``specs`` (the loaded models and their permutation specs by plan path).
    outputs: for model files returning several outputs, which one is the logits, by reference
    text (the choice the workspace holds; a file not listed uses its first output).
    datasets: dataset names. cache_dir: the result cache (None: the core's default).
    metrics: sample metrics per cell (None: every registered one, so the panel can offer all).
    Yields the matrix events (payload: each finished MatrixCell); returns the MatrixResult.
    Raises PlanError when MERGED_REF is asked for without a plan with steps or with a model
    that is not a file; what eval_matrix_job raises.
    """
    import torch

    from ..core.errors import PlanError
    from ..core.toolkit.matrix import eval_matrix_job
    from ..core.evaluate.metric_registry import metric_names

    items: list[Any] = []
    with torch.no_grad():  # thread-local: entered here, in the worker
        for text in refs:
            if text != MERGED_REF:
                items.append(_file_ref(text, outputs.get(text)) if outputs and text in outputs
                             else text)
            elif plan is None or not plan.steps:
                raise PlanError("the merged model needs a plan with at least one step")
            else:
                items.append(_merged_ref(plan, models, specs))
        wanted = list(metrics) if metrics is not None else metric_names("sample")
        result = yield from eval_matrix_job(items, datasets, wanted, cache_dir, cancel)
    return result


def study_task(cancel: CancelToken, out_dir: Path, small: bool = False,
               zoo_dir: Path | None = None) -> Job:
    """Run the MAL study (core ``study_job``) writing study.json and report.md to ``out_dir``.

    zoo_dir: the zoo to use and complete (default: as ``study_job`` chooses).
    Returns the core StudyResult (figures are drawn afterwards, in the GUI thread).
    """
    import torch

    from ..core.study import study_job

    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        # The study's models are tiny: one intra-op thread beats several (see cli_eval.py).
        torch.set_num_threads(1)
    try:
        result = yield from study_job(zoo_dir, Path(out_dir), small, cancel)
    finally:
        torch.set_num_threads(threads)
    return result
