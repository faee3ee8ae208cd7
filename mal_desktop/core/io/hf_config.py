"""Hugging Face architectures: ``config.json`` read as untrusted data and the model built by
``transformers``' own classes on the meta device (no memory, and no code from the folder).

The optional ``[hf]`` extra provides ``transformers``; it is imported inside the functions that
need it, never when this module is imported, so the GUI starts without it.

What is refused, and why (one line naming the file):
- a config with ``auto_map``: the model needs Python code shipped with the checkpoint, and
  mal_desktop never runs code from a model folder (``trust_remote_code`` is never used);
- an architecture name that is not a model class of ``transformers`` itself (looked up by name
  among its exports, checked to be a ``PreTrainedModel`` defined inside the package), or whose
  ``model_type`` differs from the config's;
- quantised checkpoints (their tensors need the quantiser's code and scales);
- JSON over 4 MiB, nested too deeply or with duplicate keys (``jsonio.loads_untrusted``), and
  integer sizes beyond what any real model uses (a crafted config must not make even the meta
  model take minutes to build).
"""

from __future__ import annotations

import inspect
import math
import re
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from ..jsonio import loads_untrusted

MAX_CONFIG_BYTES = 4 * 2**20
#: Tokens per sample of a language model: the probe and export length, and the default window
#: of text evaluation. Capped by the model's own ``max_position_embeddings``.
DEFAULT_CONTEXT = 128
# Integers in a config above this are sizes no real model has (a 2^31-wide layer, ...).
_MAX_INT = 2**31
_MAX_LAYERS = 1024
_CLASS_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_INSTALL = "install the optional Hugging Face support: pip install 'mal_desktop[hf]'"


def _transformers(where: Path) -> Any:
    """The ``transformers`` package, or a one-line error saying how to get it."""
    try:
        import transformers
    except ImportError:
        raise ModelFileError(where, f"a Hugging Face model needs transformers; {_INSTALL}") \
            from None
    return transformers


def read_config_file(path: Path) -> dict[str, Any]:
    """Read and check a ``config.json`` (see :func:`check_config`).

    Raises:
        ModelFileError: missing, too large, not JSON, not an object, or refused by check_config.
    """
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ModelFileError(path, f"config of {size} bytes; a model config is at most "
                                       f"{MAX_CONFIG_BYTES // 2**20} MiB")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(path, "no such file") from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        config = loads_untrusted(raw)
    except ValueError as exc:
        raise ModelFileError(path, f"not a valid JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(path, "not a model config: the JSON is not an object")
    check_config(path, config)
    return config


def _largest_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return abs(value)
    if isinstance(value, dict):
        return max((_largest_int(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_largest_int(v) for v in value), default=0)
    return 0


def check_config(where: Path, config: dict[str, Any]) -> str:
    """Refuse what cannot be opened without running code from the folder; return the class name.

    The class is ``architectures[0]``, else the causal-LM class transformers maps the config's
    ``model_type`` to.

    Raises:
        ModelFileError: custom code (``auto_map``), quantisation, a malformed architecture name
            or model type, or implausible sizes.
    """
    if "auto_map" in config:
        raise ModelFileError(where, "the model needs custom code (config.json has auto_map); "
                                    "mal_desktop never runs code from a model folder "
                                    "(trust_remote_code is never used)")
    if config.get("quantization_config") is not None:
        raise ModelFileError(where, "quantized models are not supported (config.json has "
                                    "quantization_config); use the unquantized checkpoint")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not re.fullmatch(r"[a-z0-9_\-]+", model_type):
        raise ModelFileError(where, "config.json has no valid model_type")
    if _largest_int(config) > _MAX_INT:
        raise ModelFileError(where, f"config.json holds an integer above {_MAX_INT}: not a "
                                    "size any model has")
    layers = config.get("num_hidden_layers", config.get("n_layer", 0))
    if isinstance(layers, int) and layers > _MAX_LAYERS:
        raise ModelFileError(where, f"config.json asks for {layers} layers (at most "
                                    f"{_MAX_LAYERS})")
    names = config.get("architectures")
    if names is None:
        return ""
    if (not isinstance(names, list) or not names or not isinstance(names[0], str)
            or not _CLASS_RE.match(names[0])):
        raise ModelFileError(where, "config.json: 'architectures' must list a class name")
    return names[0]


def model_class(where: Path, config: dict[str, Any]) -> type:
    """The transformers class that builds ``config``: ``architectures[0]`` looked up only among
    transformers' own model classes (else the causal-LM class of its ``model_type``).

    Raises:
        ModelFileError: transformers missing, an unknown class, a class that is not a
            transformers model, or one whose model type differs from the config's.
    """
    tf = _transformers(where)
    name = check_config(where, config)
    model_type = config["model_type"]
    if not name:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, "")
        if not name:
            raise ModelFileError(where, f"config.json names no architecture and model type "
                                        f"{model_type!r} has no causal language model in "
                                        f"transformers {tf.__version__}")
    try:
        cls = getattr(tf, name)
    except Exception:  # the lazy module raises AttributeError or an import error of its own
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, tf.PreTrainedModel)
            and cls.__module__.startswith("transformers.models.")):
        raise ModelFileError(where, f"architecture {name!r} is not a model class of "
                                    f"transformers {tf.__version__}")
    expected = getattr(cls.config_class, "model_type", None)
    if expected and expected != model_type:
        raise ModelFileError(where, f"architecture {name} expects model type {expected!r}, "
                                    f"config.json says {model_type!r}")
    return cls


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' advice for training users (logged and warned) while we build."""
    from transformers.utils import logging as tf_logging

    level = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tf_logging.set_verbosity(level)


def _logits_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One tensor in, the logits out: the calling convention of every mal_desktop model.

    Set on the instance (not a subclass): transformers keys behaviour off a model's class and
    module, so the class stays transformers' own. No key-value cache is built, since we only
    score whole sequences."""
    kwargs: dict[str, Any] = {type(self).main_input_name: x}
    if "use_cache" in inspect.signature(type(self).forward).parameters:
        kwargs["use_cache"] = False
    out = type(self).forward(self, **kwargs)
    return out.logits if hasattr(out, "logits") else out[0]


def build_module(where: Path, config: dict[str, Any], device: str = "meta") -> nn.Module:
    """Build the architecture of ``config`` with transformers, in eval mode, answering
    ``module(x) -> logits``.

    device: "meta" (the default) allocates nothing: weights are assigned later, from the
        memory-mapped files; "cpu" gives a randomly initialised model (tests, the demo zoo).
    Raises:
        ModelFileError: as :func:`model_class`, or a config transformers cannot build.
    """
    cls = model_class(where, config)
    try:
        with _quiet_transformers():
            hf_config = cls.config_class.from_dict(dict(config))
            with torch.device(device):
                module = cls(hf_config)
    except ModelFileError:
        raise
    except Exception as exc:  # transformers validates the config as it builds
        raise ModelFileError(where, f"cannot build {cls.__name__} from config.json: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") \
            from None
    module.forward = types.MethodType(_logits_forward, module)
    return module.eval()


def materialise_buffers(where: Path, module: nn.Module) -> None:
    """Compute the buffers a checkpoint does not store (rotary frequency tables) for a module
    built on the meta device, with transformers' own initialiser for their module.

    Raises:
        ModelFileError: a buffer transformers does not compute (it would stay undefined).
    """
    init = getattr(module, "_init_weights", None)
    for mod_name, mod in module.named_modules():
        names = [n for n, b in mod._buffers.items()
                 if b is not None and b.is_meta and n in mod._non_persistent_buffers_set]
        if not names:
            continue
        for n in names:
            buf = mod._buffers[n]
            if not buf.is_floating_point() or init is None:
                raise ModelFileError(where, f"buffer {mod_name}.{n} is not stored in the "
                                            "checkpoint and cannot be computed")
            # NaN marks what the initialiser did not fill
            mod._buffers[n] = torch.full(buf.shape, math.nan, dtype=buf.dtype)
        with torch.no_grad(), _quiet_transformers():
            init(mod)
        for n in names:
            if bool(torch.isnan(mod._buffers[n]).any()):
                raise ModelFileError(where, f"buffer {mod_name}.{n} is not stored in the "
                                            "checkpoint and transformers does not compute it")


def config_positions(config: Any) -> int | None:
    """The positions a language model's config gives it (``max_position_embeddings``, GPT-2's
    ``n_positions``); None when it names none."""
    if not isinstance(config, dict):
        return None
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    return positions if isinstance(positions, int) and positions > 0 else None


def input_spec(where: Path, module: nn.Module, config: dict[str, Any]
               ) -> tuple[tuple[int, ...], int, torch.dtype, int | None]:
    """(input_shape, num_classes, input_dtype, id_range) of a built transformers model.

    Token models take ``DEFAULT_CONTEXT`` ids (fewer when the model's positions end sooner) below
    the vocabulary size; image models take (channels, size, size) floats. The classes are the
    output embeddings' rows (a language model's vocabulary) or the config's labels.
    Raises:
        ModelFileError: an input or output transformers models use but mal_desktop does not.
    """
    key = type(module).main_input_name
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    if isinstance(head, nn.Linear):
        num_classes = head.out_features
    elif "Classification" in type(module).__name__ and isinstance(config.get("id2label"), dict):
        num_classes = len(config["id2label"])
    else:
        raise ModelFileError(where, f"{type(module).__name__} has no language-model or "
                                    "classification head; mal_desktop scores logits")
    if key == "input_ids":
        positions = config_positions(config)
        context = DEFAULT_CONTEXT if positions is None else min(DEFAULT_CONTEXT, positions)
        vocab = config.get("vocab_size")
        return (context,), num_classes, torch.int64, vocab if isinstance(vocab, int) else None
    if key == "pixel_values":
        channels, size = config.get("num_channels", 3), config.get("image_size")
        if isinstance(channels, int) and isinstance(size, int):
            return (channels, size, size), num_classes, torch.float32, None
    raise ModelFileError(where, f"{type(module).__name__} takes {key!r}; mal_desktop opens "
                                "models taking token ids or images")


def hf_arch(class_name: str, config: dict[str, Any], tokenizer: Path | None,
            tokenizer_sha256: str | None) -> dict[str, Any]:
    """The ``LoadedModel.arch`` of a Hugging Face model: rebuilt from the class and config alone
    (a merged model saved by mal_desktop carries it); the tokenizer is recorded for text
    evaluation."""
    arch: dict[str, Any] = {"kind": "hf", "class": class_name, "config": config}
    if tokenizer is not None:
        arch["tokenizer"] = str(tokenizer)
        arch["tokenizer_sha256"] = tokenizer_sha256
    return arch


def config_of_arch(where: Path, arch: dict[str, Any]) -> dict[str, Any]:
    """The config of a stored ``hf`` architecture, checked like a config.json, with its class
    as ``architectures``.

    Raises:
        ModelFileError: a malformed architecture or a config refused by :func:`check_config`.
    """
    config, name = arch.get("config"), arch.get("class")
    if not isinstance(config, dict) or not isinstance(name, str):
        raise ModelFileError(where, "corrupt mal_desktop metadata: an hf architecture needs "
                                    "'class' and 'config'")
    config = {**config, "architectures": [name]}
    check_config(where, config)
    return config
