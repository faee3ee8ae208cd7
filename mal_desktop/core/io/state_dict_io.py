"""Plain state dicts: tensor-only .pt/.pth loading, checkpoint unwrapping, user architecture
factories (``module:function``), fitting a state into a module, and the finite-weights check.

A plain state dict carries no architecture, so the user names one as ``package.module:function``.
Importing and calling it runs the user's code; that is why it is an explicit opt-in (``arch=``,
``--arch`` on the command line) and never inferred from a file.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from ..progress import check_cancelled
from .meta import meta_leftovers, meta_twin, params_on_meta, retie, tie_groups
from .pages import PageReleaser

_FACTORY_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_SHOW = 3  # how many keys an error message lists before "(+N more)"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


_CHUNK = 1 << 22  # elements per step of a pass over a tensor: bounded temporaries, fast enough


def _all_finite(tensor: torch.Tensor) -> bool:
    """One chunked pass, no temporary larger than a chunk (the NaN/inf counts are only computed
    for the rare tensor that fails)."""
    flat = tensor.detach().reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start:start + _CHUNK]
        if chunk.is_floating_point() and chunk.element_size() < 2:  # float8: no isfinite
            chunk = chunk.float()
        if chunk.is_floating_point() and chunk.numel():
            # min and max are finite only when every element is (both propagate NaN); one
            # aminmax pass is much faster than isfinite plus a reduction
            lo, hi = torch.aminmax(chunk)
            if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
                return False
        elif not bool(torch.isfinite(chunk).all()):
            return False
    return True


def check_finite(path: str | Path, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights containing NaN or infinity: they poison every merge they take part in.

    Memory-mapped tensors are read in chunks and their pages handed back after each tensor
    (see pages.py), so checking a model far larger than memory keeps a bounded resident set.
    Tensors on the meta device hold no values and are skipped.

    Raises:
        ModelFileError: naming the first offending tensor, e.g.
            "tensor layers.0.weight has 3 NaN values (and 1 more tensor with NaN/inf)".
    """
    bad: list[str] = []
    pages = PageReleaser()
    for name, tensor in state.items():
        check_cancelled()  # a 7B model is 13 GB to read: Cancel must not wait for all of it
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.is_meta:
            continue
        if not _all_finite(tensor):
            t = tensor.detach()
            if t.is_floating_point() and t.element_size() < 2:
                t = t.float()
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(torch.isinf(t).sum())
            parts = ([f"{n_nan} NaN"] if n_nan else []) + ([f"{n_inf} inf"] if n_inf else [])
            noun = "value" if n_nan + n_inf == 1 else "values"
            bad.append(f"tensor {name} has {' and '.join(parts)} {noun}")
        pages.release(tensor)
    if bad:
        more = len(bad) - 1
        suffix = f" (and {more} more tensor{'s' if more > 1 else ''} with NaN/inf)" if more else ""
        raise ModelFileError(path, bad[0] + suffix)


#: The dtypes mal_desktop merges. Integer, boolean, complex and 8-bit float weights have no
#: meaningful interpolation (and quantised formats need their scales), so they are refused by name.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_weight_dtypes(path: str | Path, tensors: Mapping[str, torch.Tensor],
                        reference: Mapping[str, torch.Tensor] | None = None) -> None:
    """Refuse weights of a dtype mal_desktop cannot merge.

    Every floating tensor must be float16, bfloat16, float32 or float64; boolean and complex
    tensors are refused anywhere. Integer tensors are accepted only where ``reference`` (the
    architecture's own state: module buffers such as BatchNorm's ``num_batches_tracked``) holds
    an integer tensor too; without a reference every integer tensor is refused.

    Raises:
        ModelFileError: naming the first offending tensor and its dtype, and the dtypes accepted.
    """
    for name, tensor in tensors.items():
        dtype = tensor.dtype
        ref = reference.get(name) if reference is not None else None
        integer_buffer = (ref is not None and not ref.is_floating_point() and not ref.is_complex()
                          and ref.dtype != torch.bool)
        if dtype in WEIGHT_DTYPES:
            continue
        if integer_buffer and not (tensor.is_floating_point() or tensor.is_complex()
                                   or dtype == torch.bool):
            continue
        raise ModelFileError(path, f"tensor {name} is {_dtype_name(dtype)}; mal_desktop merges "
                                   f"only floating-point weights ("
                                   f"{', '.join(map(_dtype_name, WEIGHT_DTYPES))})")


def torch_load_weights(path: Path, mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``).

    torch's weights-only unpickler refuses every global outside a small allowlist, so a pickle
    whose ``__reduce__`` would call a function is rejected before anything runs.

    Parameters:
        path: a .pt/.pth file, opened read-only.
        mmap: map tensor data instead of reading it (zip-format files only; falls back to a
            normal read for the legacy format).
    Raises:
        ModelFileError: unsafe or unsupported pickle content ("refusing to unpickle ..."),
            a TorchScript archive, or a corrupt file.
    """
    if _looks_like_safetensors(path):  # renamed: torch's message would be about pickle opcodes
        raise ModelFileError(path, "is a safetensors file, not a PyTorch pickle: give it the "
                                   ".safetensors extension")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if mmap and "mmap can only be used" in str(exc):
                return torch.load(path, map_location="cpu", weights_only=True)
            raise
    except ModelFileError:
        raise
    except Exception as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise ModelFileError(path, f"refusing to unpickle: the file references "
                                       f"{found.group(1)}, which could run code; only tensors "
                                       "and plain containers are loaded (save model.state_dict() "
                                       "instead)") from None
        if "Weights only load failed" in text:
            detail = text.rsplit("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0]
            raise ModelFileError(path, f"refusing to unpickle: not a tensor-only PyTorch file "
                                       f"({detail})") from None
        if "TorchScript" in text:
            raise ModelFileError(path, "is a TorchScript archive; save the model with "
                                       "torch.export.save (.pt2) or save its "
                                       "state_dict()") from None
        raise ModelFileError(path, f"corrupt PyTorch file: {_first_line(exc)}") from None


def _looks_like_safetensors(path: str | Path) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian) and the
    header's '{'; a PyTorch file is a zip archive or starts with a pickle opcode."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False  # torch.load reports it
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= size - 8


def unwrap_state(path: str | Path, obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded .pt object: the mapping itself, or a checkpoint's
    ``"state_dict"`` / ``"model"`` entry.

    Raises:
        ModelFileError: no mapping of names to tensors is found.
    """
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in inner.items()):
                return dict(inner)
        for k, v in obj.items():
            if not isinstance(v, torch.Tensor):
                raise ModelFileError(path, f"not a state dict: entry {k!r} is a "
                                           f"{type(v).__name__}, not a tensor (checkpoints are "
                                           "read from their 'state_dict' or 'model' entry)")
        raise ModelFileError(path, "not a state dict: the file holds an empty mapping")
    raise ModelFileError(path, f"not a state dict: the file holds a {type(obj).__name__}, not a "
                               "mapping of names to tensors")


@dataclass(frozen=True)
class FactoryModel:
    """A module built by a user architecture factory, with its input and output sizes."""

    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    outputs: int = 1  # tensors the module returns (0: not probed, the factory declared its sizes)
    output_index: int = 0  # the one that is the logits


def output_leaves(out: Any) -> list[Any] | None:
    """The outputs of a module that returns several (a tuple, a list, or a dict-like such as a
    transformers ModelOutput, in order); None for a single tensor."""
    if isinstance(out, torch.Tensor):
        return None
    if hasattr(out, "values") and callable(out.values):
        return list(out.values())
    if isinstance(out, (tuple, list)):
        return list(out)
    return None


def _shape_attr(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(s) for s in value)
    except (TypeError, ValueError):
        return None
    return shape if shape and all(s > 0 for s in shape) else None


def _infer_input_shape(path: Path, spec: str, module: nn.Module) -> tuple[int, ...]:
    """Input shape from the first weight layer: a Linear tells its input size, a convolution
    does not tell the spatial size, so it has to be declared."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            return (sub.in_features,)
        if isinstance(sub, nn.modules.conv._ConvNd):
            raise ModelFileError(path, f"architecture {spec!r} starts with a convolution: set "
                                       "input_shape (per sample, e.g. (1, 8, 8)) on the module or "
                                       "as an attribute of the factory function")
    raise ModelFileError(path, f"cannot tell the input shape of architecture {spec!r}: set "
                               "input_shape on the module or as an attribute of the factory")


def build_factory_module(path: str | Path, spec: str, output: int | None = None,
                         meta: bool = False) -> FactoryModel:
    """Import ``package.module:function``, call it with no arguments and describe the module.

    input_shape: the module's or the factory's ``input_shape`` attribute, else the first Linear's
    ``in_features``. num_classes: a ``num_classes`` attribute, else the last axis of the output of
    a probe forward pass on zeros (which also proves the input shape fits). A module returning
    several tensors (a tuple, list or dict of outputs) is described by output ``output``
    (default 0), the logits.

    Parameters:
        path: the model file the architecture is for (named in errors).
        spec: "package.module:function" (attribute paths with dots are allowed after the colon).
        output: which output is the logits when the module returns several (None: the first).
        meta: build the parameters on the meta device (``params_on_meta``): no weight is
            kept or randomly initialised (the weights are attached afterwards); the probe pass
            then runs on a meta twin.
    Returns:
        The module in eval mode with its input shape and number of classes.
    Raises:
        ModelFileError: malformed spec, import failure, factory failure, not an nn.Module, unknown
            input shape, or a probe forward pass that fails.
    """
    path = Path(path)
    if not _FACTORY_RE.match(spec):
        raise ModelFileError(path, f"architecture {spec!r} must look like "
                                   "'package.module:function'")
    module_name, attr_path = spec.split(":", 1)
    try:
        factory: Any = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            factory = getattr(factory, attr)
    except Exception as exc:  # the user's module may raise anything while importing
        raise ModelFileError(path, f"cannot import architecture {spec!r}: "
                                   f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not callable(factory):
        raise ModelFileError(path, f"architecture {spec!r} is not callable")
    try:
        if meta:
            with params_on_meta():
                module = factory()
        else:
            module = factory()
    except Exception as exc:
        raise ModelFileError(path, f"architecture factory {spec!r} failed: "
                                   f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ModelFileError(path, f"architecture factory {spec!r} returned a "
                                   f"{type(module).__name__}, not a torch.nn.Module")
    module.eval()
    input_shape = (_shape_attr(getattr(module, "input_shape", None))
                   or _shape_attr(getattr(factory, "input_shape", None))
                   or _infer_input_shape(path, spec, module))
    num_classes = getattr(module, "num_classes", None) or getattr(factory, "num_classes", None)
    if output is not None and (isinstance(output, bool) or not isinstance(output, int)
                               or output < 0):
        raise ModelFileError(path, f"output index must be a whole number >= 0, got {output!r}")
    if isinstance(num_classes, int) and num_classes > 0:
        # sizes declared: no probe, so the number of outputs is not known here (the evaluator
        # still picks output ``output`` of whatever the module returns)
        return FactoryModel(module, input_shape, num_classes, 0, output or 0)
    try:
        with torch.no_grad():
            if meta:  # the parameters hold no values: probe a meta twin for the shapes
                out = meta_twin(module)(torch.zeros((2, *input_shape), device="meta"))
            else:
                out = module(torch.zeros((2, *input_shape)))
    except Exception as exc:
        raise ModelFileError(path, f"architecture {spec!r} does not run on input shape "
                                   f"{input_shape}: {type(exc).__name__}: "
                                   f"{_first_line(exc)}") from None
    leaves = output_leaves(out)
    count = 1 if leaves is None else len(leaves)
    index = output or 0
    if leaves is not None:
        if not leaves:
            raise ModelFileError(path, f"architecture {spec!r} returns no outputs")
        if index >= count:
            raise ModelFileError(path, f"architecture {spec!r} returns {count} outputs; there is "
                                       f"no output {index} (outputs are numbered from 0)")
        out = leaves[index]
    elif index != 0:
        raise ModelFileError(path, f"architecture {spec!r} returns one output; there is no "
                                   f"output {index}")
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        which = f"output {index}" if leaves is not None else "the output"
        raise ModelFileError(path, f"architecture {spec!r}: {which} must be one tensor of shape "
                                   "(batch, ..., classes)")
    return FactoryModel(module, input_shape, int(out.shape[-1]), count, index)


def load_state_into(path: str | Path, module: nn.Module, state: Mapping[str, torch.Tensor],
                    what: str) -> None:
    """Load ``state`` into ``module`` strictly, with a readable error on any mismatch.

    A state saved from ``nn.DataParallel`` (every key prefixed "module.") is accepted.

    Parameters:
        path: the file the state came from (named in errors).
        module: the architecture.
        state: names to tensors.
        what: how to call the architecture in messages, e.g. "architecture 'x:y'".
    Raises:
        ModelFileError: listing the first few missing keys, unexpected keys and shape mismatches.
    """
    expected = module.state_dict()
    state = check_shapes(path, expected, state, what)
    check_weight_dtypes(path, state, expected)
    try:
        module.load_state_dict(dict(state), strict=True)
    except Exception as exc:  # e.g. a dtype that cannot be copied into the parameter
        raise ModelFileError(path, f"weights do not fit {what}: {_first_line(exc)}") from None


def check_shapes(path: str | Path, expected: Mapping[str, torch.Tensor],
                 state: Mapping[str, torch.Tensor], what: str) -> Mapping[str, torch.Tensor]:
    """Check that ``state`` has exactly the keys and shapes of ``expected`` (an architecture's
    state dict, possibly on the meta device). A state saved from ``nn.DataParallel`` (every key
    prefixed "module.") is accepted; returns the state with the prefix removed.

    Raises:
        ModelFileError: listing the first few missing keys, unexpected keys and shape mismatches.
    """
    if (state and all(k.startswith("module.") for k in state)
            and not any(k.startswith("module.") for k in expected)):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the "
                  "architecture" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape of {_listing(mismatched)}")
    if problems:
        raise ModelFileError(path, f"weights do not fit {what}: " + "; ".join(problems))
    return state


def attach_state(path: str | Path, module: nn.Module, state: Mapping[str, torch.Tensor],
                 what: str) -> bool:
    """Make ``state``'s tensors the parameters and buffers of ``module`` (built on the meta
    device) without copying them: memory-mapped tensors stay mapped, so a model costs memory
    only for what is read. Keys, shapes and dtypes are checked as in :func:`load_state_into`;
    a tensor whose dtype differs from the architecture's is converted (a copy of that tensor
    only, as loading into a built module would). Tied weights stay tied.

    Returns:
        True when every tensor of the module now holds data; False when some stayed on the meta
        device (non-persistent buffers, which a state does not carry): the caller then builds
        the module for real and uses :func:`load_state_into`.
    Raises:
        ModelFileError: as :func:`load_state_into`.
    """
    expected = module.state_dict(keep_vars=True)
    state = check_shapes(path, expected, state, what)
    check_weight_dtypes(path, state, expected)
    fitted = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype)
              for k, v in state.items()}
    groups = tie_groups(module)  # before assignment, which gives each name its own tensor
    try:
        module.load_state_dict(fitted, strict=True, assign=True)
    except Exception as exc:
        raise ModelFileError(path, f"weights do not fit {what}: {_first_line(exc)}") from None
    retie(module, groups)
    return not meta_leftovers(module)


def factory_with_state(path: str | Path, spec: str, state: Mapping[str, torch.Tensor],
                       output: int | None = None) -> FactoryModel:
    """Build the user architecture ``spec`` and give it ``state``'s weights.

    Built on the meta device and the tensors attached without a copy where the factory allows;
    a factory that cannot run on the meta device (it reads data while building), or a module
    with buffers no state carries, is built for real and the state copied in.

    Raises:
        ModelFileError: as :func:`build_factory_module` and :func:`load_state_into`.
    """
    what = f"architecture {spec!r}"
    try:
        built = build_factory_module(path, spec, output, meta=True)
    except ModelFileError:
        built = None  # the real build below reports the factory's own error, if any
    if built is not None and attach_state(path, built.module, state, what):
        return built
    built = build_factory_module(path, spec, output)
    load_state_into(path, built.module, state, what)
    return built
