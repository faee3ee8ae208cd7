"""Classification loss and accuracy of a model on a dataset split.

Evaluation never changes the model: gradients are off (``torch.no_grad`` entered inside the
function, since grad mode is thread-local and the caller may be a worker thread), every submodule
is switched to eval mode only for the duration of the call and its flag restored afterwards, and
a model whose weights live on another device than :func:`compute_device` is evaluated through a
copy moved there.

Text datasets are scored per token (:func:`token_scores`): loss is the mean next-token
cross-entropy (perplexity is its exponential) and accuracy the next-token accuracy.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import compute_device
from ..errors import DatasetError, MalError, MalWarning
from ..io.model import LoadedModel
from ..io.pt2_io import program_batch_size
from ..progress import CancelToken
from .datasets import Dataset, is_text_dataset
from .text import IGNORE, model_tokenizer, text_context, token_windows


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model on one set of samples.

    loss: mean cross-entropy (inf or nan when the model produced non-finite logits).
    accuracy: fraction of samples whose arg-max logit is the label, in [0, 1].
    n: number of samples.
    """

    loss: float
    accuracy: float
    n: int


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block, then restore each one's own flag.

    The flags are set directly rather than through ``module.eval()``: an exported program's module
    refuses ``eval()`` (its graph is fixed), and restoring with ``train()`` would flatten a mix
    of modes that the caller may have set on purpose.
    """
    saved = [(m, m.training) for m in module.modules()]
    for m, _ in saved:
        m.training = False
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _module_device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the module's first parameter or buffer (CPU if it has none) and its float dtype."""
    device = torch.device("cpu")
    dtype = torch.float32
    for t in (*module.parameters(), *module.buffers()):
        device = t.device
        break
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            dtype = t.dtype
            break
    return device, dtype


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    # "cuda" and "cuda:0" name the same device when only the default one is in use.
    return a.index == b.index or a.type == "cpu" or a.index is None or b.index is None


def _pick_output(out: object, index: int) -> object:
    """Output ``index`` of a module returning several (a tuple, list or dict-like output)."""
    if isinstance(out, torch.Tensor):
        return out
    values = list(out.values()) if hasattr(out, "values") else out
    if isinstance(values, (tuple, list)):
        if not 0 <= index < len(values):
            raise MalError(f"the model returns {len(values)} outputs; there is no output {index}")
        return values[index]
    return out


@contextmanager
def _quiet_vmap_fallback() -> Iterator[None]:
    """Without torch's notice that an operator with no batching rule (e.g. CPU flash attention)
    runs group by group inside vmap: still right, and still faster than running the whole
    program group by group. torch can set the notice but not report it, so it is switched back
    on afterwards, which is torch's default."""
    switch = getattr(torch._C._functorch, "_set_vmap_fallback_warning_enabled", None)
    if switch is None:
        yield
        return
    switch(False)
    try:
        yield
    finally:
        switch(True)


class _FixedBatchRunner:
    """Runs a module that accepts only batches of ``fixed`` samples (a .pt2 program exported
    with a static batch axis) on any multiple of that size.

    The batch is cut into groups of ``fixed`` and the module is mapped over the groups with
    ``torch.vmap``: one call whose every operator works on all the groups at once, instead of
    one call per group. A program's many small operators each cost a dispatch (and, with
    several threads, a parallel region) per call; at a fixed batch of 2 the per-group loop
    made whole-model curves of the demo Mixer 10x and of a small ViT 5x slower than the same
    models in plain torch (benchmarks/memory_bench.py, benchmarks/README.md). A program that
    ``vmap`` cannot map (an operator without a batching rule that refuses, randomness) runs
    group by group, as before.
    """

    def __init__(self, module: nn.Module, fixed: int) -> None:
        self.module, self.fixed = module, fixed
        self.mapped: object = None

    def __call__(self, batch: torch.Tensor) -> object:
        groups = len(batch) // self.fixed
        if groups > 1 and self.mapped is not False:
            try:
                if self.mapped is None:
                    self.mapped = torch.vmap(self.module)
                with _quiet_vmap_fallback():
                    out = self.mapped(batch.reshape(groups, self.fixed, *batch.shape[1:]))
                return torch.utils._pytree.tree_map(
                    lambda t: t.flatten(0, 1) if isinstance(t, torch.Tensor) else t, out)
            except Exception:  # noqa: BLE001 - any refusal: the loop below is always right
                self.mapped = False
        outs = [self.module(batch[i:i + self.fixed]) for i in range(0, len(batch), self.fixed)]
        if all(isinstance(o, torch.Tensor) for o in outs):
            return torch.cat(outs)  # type: ignore[arg-type]
        return torch.utils._pytree.tree_map(
            lambda *ts: torch.cat(ts) if isinstance(ts[0], torch.Tensor) else ts[0], *outs)


def predict_logits(module: nn.Module, x: torch.Tensor, batch_size: int = 512,
                   fixed_batch: int | None = None, output_index: int = 0) -> torch.Tensor:
    """Run ``module`` on ``x`` in batches and return its outputs.

    module: a classifier returning (batch, classes) logits; it is not modified.
    x: inputs (N, *input_shape).
    batch_size: samples per forward pass.
    fixed_batch: the only batch size the module accepts (a .pt2 program exported without a
        dynamic batch axis); the last batch is zero-padded to it and the padding dropped.
    output_index: which output is the logits when the module returns several.
    Integer inputs (token ids) keep their dtype; floating inputs take the module's.
    Returns a CPU float32 tensor of shape (N, classes).
    Raises MalError when the module's output is not a (batch, classes) tensor. Warns
    (MalWarning, :func:`warn_if_probabilities`) when the outputs look like probabilities.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = compute_device()
    module_device, dtype = _module_device_dtype(module)
    if not _same_device(module_device, device):
        # Moving the caller's module would modify it; work on a copy instead.
        module = copy.deepcopy(module).to(device)
    run = _FixedBatchRunner(module, fixed_batch) if fixed_batch is not None else module
    if fixed_batch is not None:  # whole multiples of the fixed batch, run together
        batch_size = fixed_batch * max(1, batch_size // fixed_batch)
    outputs: list[torch.Tensor] = []
    with torch.no_grad(), _eval_mode(module):
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            batch = chunk.to(device=device, dtype=dtype if chunk.is_floating_point() else chunk.dtype)
            real = len(batch)
            if fixed_batch is not None and real % fixed_batch:
                pad = batch.new_zeros((fixed_batch - real % fixed_batch, *batch.shape[1:]))
                batch = torch.cat([batch, pad])
            out = _pick_output(run(batch), output_index)
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(batch):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise MalError(f"model output has shape {shape}; expected (batch, classes) logits")
            outputs.append(out[:real].detach().to("cpu", torch.float32))
    if not outputs:
        return torch.empty((0, 0), dtype=torch.float32)
    logits = torch.cat(outputs)
    warn_if_probabilities(logits)
    return logits


# How far a row's sum may be from 1 for the outputs to count as probabilities (float32 softmax
# rows sum to 1 within ~1e-6; logits practically never all sum to 1 to within this).
PROBABILITY_SUM_TOLERANCE = 1e-3


def warn_if_probabilities(outputs: torch.Tensor) -> bool:
    """Warn (MalWarning) when a model's outputs look like class probabilities, not logits.

    Every loss here is cross-entropy on logits. Fed probabilities it takes a second softmax, which
    flattens them towards uniform: the loss sits near log(classes) whatever the model predicts,
    while accuracy (the arg-max) stays right, so losses, barriers and curves would be wrong with
    nothing to show it. Such outputs come from a model saved with its final softmax layer.
    Log-probabilities (a final log_softmax) are fine and do not warn: softmax leaves them as they
    are.

    outputs: (N, classes) model outputs. Returns True when it warned.
    """
    if outputs.ndim != 2 or outputs.shape[0] == 0 or outputs.shape[1] < 2:
        return False
    if not bool(torch.isfinite(outputs).all()) or float(outputs.min()) < 0.0 \
            or float(outputs.max()) > 1.0:
        return False
    if float((outputs.double().sum(dim=1) - 1.0).abs().max()) > PROBABILITY_SUM_TOLERANCE:
        return False
    warnings.warn(MalWarning(
        f"the model's outputs look like probabilities (each of {outputs.shape[0]} rows lies in "
        "[0, 1] and sums to 1), not logits: the cross-entropy loss treats them as logits and is "
        "wrong (accuracy is not affected); save the model without its final softmax"),
        stacklevel=3)
    return True


def evaluate_module(module: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int = 512, fixed_batch: int | None = None,
                    output_index: int = 0) -> EvalResult:
    """Mean cross-entropy and accuracy of ``module`` on inputs ``x`` with integer labels ``y``.

    Non-finite logits give a non-finite loss, reported as is.
    Raises DatasetError when there are no samples, ``x`` and ``y`` differ in length, or a label is
    outside the model's classes.
    """
    if len(x) != len(y):
        raise DatasetError(f"{len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise DatasetError("no samples to evaluate")
    logits = predict_logits(module, x, batch_size, fixed_batch, output_index)
    y = y.to(torch.int64)
    num_classes = logits.shape[1]
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DatasetError(f"labels range over {lo}..{hi} but the model has {num_classes} classes")
    # Computed on the whole set at once so the value is exactly torch's mean cross-entropy.
    loss = float(F.cross_entropy(logits, y))
    accuracy = float((logits.argmax(dim=1) == y).double().mean())
    return EvalResult(loss=loss, accuracy=accuracy, n=len(y))


def check_data_fits(model: LoadedModel, data: Dataset) -> None:
    """Refuse a dataset ``model`` cannot read - text for an image or feature model, images or
    features for a language model, inputs of another size - before any work is done for it
    (a plan's assembly, a curve's alignment): the same errors scoring would raise at the end.

    Raises DatasetError naming the model and the dataset.
    """
    if data.text is None:
        fit_inputs(model, data.x_test[:1], data.name)
    else:
        _refuse_text_for_images(model, data.name)


def check_kind_fits(model: LoadedModel, spec: str) -> None:
    """Refuse text for an image or feature model from the dataset spec alone, before the data
    is read (a folder with no .txt files said so first, not that the model reads no text).
    Raises DatasetError as :func:`check_data_fits`."""
    if is_text_dataset(spec):
        _refuse_text_for_images(model, spec)


def _refuse_text_for_images(model: LoadedModel, data_name: str) -> None:
    """The one refusal of a text dataset ``data_name`` for a model that reads floats."""
    if model.probe_dtype().is_floating_point:
        raise DatasetError(f"model {model.name} reads images or features, not token ids; "
                           f"dataset {data_name} is text, for language models: choose an image "
                           "or feature dataset")


def fit_inputs(model: LoadedModel, x: torch.Tensor, data_name: str) -> torch.Tensor:
    """``x`` reshaped to the model's per-sample shape when the element counts agree.

    Raises DatasetError naming dataset ``data_name`` and the model when they do not.
    """
    if len(x) and x.is_floating_point() and model.id_range() is not None:
        # reshaping would feed pixel values to an embedding as token ids
        raise DatasetError(f"model {model.name} reads token ids (a language model); dataset "
                           f"{data_name} holds images or features, not text: choose a text "
                           f"dataset")
    want = tuple(int(s) for s in model.input_shape)
    have = tuple(int(s) for s in x.shape[1:])
    if have == want:
        return x
    if len(x) == 0:  # no samples (a text dataset holds text, not inputs): any shape fits
        return x.reshape(0, *want)
    if math.prod(have) == math.prod(want):
        return x.reshape(len(x), *want)
    raise DatasetError(f"dataset {data_name} has inputs of shape {have}, "
                       f"model {model.name} expects {want}")


def evaluate_model(model: LoadedModel, data: Dataset, split: str = "test",
                   batch_size: int = 512, cancel: CancelToken | None = None) -> EvalResult:
    """Loss and accuracy of a loaded model on one split ("test" or "train") of a dataset
    (per token for a text dataset: see :func:`token_scores`; ``cancel`` is checked between
    its batches, which take seconds each for a large language model).

    Inputs whose per-sample shape differs from ``model.input_shape`` but has as many elements
    (e.g. flat 64-vectors for a (1, 8, 8) model) are reshaped.
    Raises DatasetError for an unknown or empty split, inputs of another size, or labels the model
    has no class for.
    """
    if split == "test":
        x, y = data.x_test, data.y_test
    elif split == "train":
        x, y = data.x_train, data.y_train
    else:
        raise DatasetError(f"unknown split {split!r} of dataset {data.name}; use 'test' or 'train'")
    if data.text is not None:
        scores = token_scores(model, data, split, batch_size, cancel)
        return EvalResult(loss=float(scores.loss.mean()), accuracy=float(scores.correct.mean()),
                          n=len(scores.loss))
    if len(y) == 0:
        raise DatasetError(f"dataset {data.name} has no {split} samples")
    x = fit_inputs(model, x, data.name)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise DatasetError(f"dataset {data.name} has a negative label {lo}")
    if hi >= model.num_classes:
        raise DatasetError(f"dataset {data.name} has label {hi}, "
                           f"model {model.name} has only {model.num_classes} classes")
    return evaluate_module(model.module, x, y, batch_size, _fixed_batch(model),
                           model.output_index)


def _fixed_batch(model: LoadedModel) -> int | None:
    """The batch size ``model``'s program only runs on (exported with a static batch axis)."""
    return program_batch_size(model.program) if model.program is not None else None


def predict_model_logits(model: LoadedModel, x: torch.Tensor, batch_size: int = 512
                         ) -> torch.Tensor:
    """The logits of ``model`` on ``x``: the output chosen as its logits, run in batches its
    program accepts (:func:`predict_logits`)."""
    return predict_logits(model.module, x, batch_size, _fixed_batch(model), model.output_index)


@dataclass(frozen=True)
class TokenScores:
    """Per scored token of a text: the true next token, the predicted one, -log p(true),
    the top probability and the document it belongs to (numpy arrays of equal length)."""

    labels: np.ndarray
    preds: np.ndarray
    loss: np.ndarray
    confidence: np.ndarray
    categories: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return (self.preds == self.labels) & np.isfinite(self.loss)


#: Logit elements per forward batch of text (float32: 256 MiB), whatever the vocabulary.
TEXT_BATCH_ELEMENTS = 2**26


def token_scores(model: LoadedModel, data: Dataset, split: str = "test",
                 batch_size: int = 512, cancel: CancelToken | None = None) -> TokenScores:
    """Score every next token of a text dataset with the model's own tokenizer (or the one the
    dataset names), in windows of the dataset's context or the model's input length.

    Batches hold at most ``batch_size`` windows and TEXT_BATCH_ELEMENTS logits, so memory stays
    bounded for large vocabularies; logits are never kept.
    Raises DatasetError when the model has no tokenizer, its tokens exceed the model's
    vocabulary, or its output is not (batch, tokens, vocabulary) logits.
    """
    assert data.text is not None
    corpus = data.text
    # the tokenizer and vocabulary checks below would send an image model's user looking for a
    # tokenizer the model cannot use
    check_data_fits(model, data)
    tokenizer = model_tokenizer(model.arch, model.name, corpus)
    context = text_context(model.arch, model.name, int(model.input_shape[0]), corpus)
    windows = token_windows(corpus, split, tokenizer, context)
    vocab = model.id_range() or model.num_classes
    if int(windows.inputs.max()) >= vocab:
        raise DatasetError(f"tokenizer {tokenizer} gives token id {int(windows.inputs.max())}, "
                           f"model {model.name} has {vocab} embeddings: not its tokenizer")
    device = compute_device()
    module = model.module
    if not _same_device(_module_device_dtype(module)[0], device):
        module = copy.deepcopy(module).to(device)
    per_batch = max(1, min(batch_size, TEXT_BATCH_ELEMENTS // (context * max(vocab, 1))))
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad(), _eval_mode(module):
        for start in range(0, len(windows.inputs), per_batch):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = windows.inputs[start:start + per_batch].to(device)
            y = windows.targets[start:start + per_batch].to(device)
            logits = _pick_output(module(x), model.output_index)
            if not isinstance(logits, torch.Tensor) or logits.shape[:2] != x.shape \
                    or logits.ndim != 3:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else "?"
                raise DatasetError(f"model {model.name} gives outputs of shape {shape} on "
                                   f"{tuple(x.shape)} token ids, not next-token logits")
            logp = torch.log_softmax(logits.float(), dim=-1)
            keep = y != IGNORE
            target = y[keep]
            rows = logp[keep]
            top, pred = rows.max(dim=-1)
            loss = -rows.gather(1, target[:, None])[:, 0]
            parts.append(tuple(t.cpu() for t in (target, pred, loss, top.exp(), keep.sum(1))))
    labels, preds, loss, confidence, per_window = (torch.cat([p[i] for p in parts])
                                                   for i in range(5))
    categories = np.repeat(windows.categories, per_window.numpy())
    return TokenScores(labels.numpy(), preds.numpy(), loss.double().numpy(),
                       confidence.double().numpy(), categories)
