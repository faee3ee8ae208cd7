"""Discovered permutation specs, cached per architecture in the user cache.

Discovery traces the model: a recorded forward pass (record.py) takes milliseconds, but a model
above 50 M parameters, opened from headers or refusing a recording is exported (torch.export):
about 3 CPU seconds on a cold start, most of it importing torch's compiler stack, for every
`mal inspect`, `mal curve` and every model the app opens. The spec depends only on the
architecture, not on the weights, so it is stored as JSON keyed by everything it depends on:

- the architecture: a family and its config, a .pt2 program's sha256, or a user factory's name
  plus the size and modification time of its source file (user code can change under its name);
- the state's structure: keys, shapes, dtypes and which keys share one tensor (tied weights);
- the probe: input shape, dtype, id range and the output used;
- the discovery code itself (a hash of this package's sources) and the torch version.

Models made in memory (kind "memory") have no such identity and are never cached; other kinds
(e.g. Hugging Face folders) opt in by being added to ``_IDENTITY``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from ..io.atomic import atomic_write_text
from ..io.model import LoadedModel
from ..jsonio import loads_untrusted
from ..user_dirs import user_cache_dir
from .spec import Axis, HeadGroup, Layer, PermutationSpec, Space

FORMAT = 3  # 2: attention head groups; 3: repeated axes (grouped-query attention)


def _family(arch: dict[str, Any]) -> Any:
    return {"family": arch.get("family"), "config": arch.get("config")}


def _pt2(arch: dict[str, Any]) -> Any:
    return {"sha256": arch.get("sha256")}  # the path may move; the bytes are what count


def _factory(arch: dict[str, Any]) -> Any:
    name = str(arch.get("factory", ""))
    try:
        origin = importlib.util.find_spec(name.split(":", 1)[0]).origin
        st = Path(origin).stat()
        source = [origin, st.st_size, st.st_mtime_ns]
    except (ImportError, AttributeError, ValueError, TypeError, OSError):
        return None  # cannot tell whether the code changed: do not cache
    return {"factory": name, "source": source}


def _hf(arch: dict[str, Any]) -> Any:
    """A Hugging Face model is identified by its class and config (the weights do not matter)."""
    return {"class": arch.get("class"), "config": arch.get("config")}


_IDENTITY: dict[str, Callable[[dict[str, Any]], Any]] = {
    "family": _family, "pt2": _pt2, "factory": _factory, "hf": _hf}


@lru_cache(maxsize=1)
def _code_version() -> str:
    """A hash of the discovery code: a spec cached by other code is never reused."""
    digest = hashlib.sha256(torch.__version__.encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def spec_key(model: LoadedModel) -> str | None:
    """The cache key of ``model``'s spec, or None when the model cannot be identified."""
    arch = model.arch if isinstance(model.arch, dict) else {}
    identify = _IDENTITY.get(str(arch.get("kind")))
    identity = identify(arch) if identify is not None else None
    if identity is None:
        return None
    first: dict[int, str] = {}
    structure = []
    for key, t in model.module.state_dict(keep_vars=True).items():
        tied = first.setdefault(id(t), key)
        structure.append([key, list(t.shape), str(t.dtype), tied if tied != key else None])
    parts = {"format": FORMAT, "code": _code_version(), "arch": identity,
             "state": structure, "input_shape": list(model.input_shape),
             "input_dtype": str(model.probe_dtype()), "id_range": model.id_range(),
             "output_index": model.output_index}
    try:
        text = json.dumps(parts, sort_keys=True)
    except (TypeError, ValueError):
        return None  # a config that is not plain JSON cannot be keyed reliably
    return hashlib.sha256(text.encode()).hexdigest()


def _axis_json(axis: Axis | None) -> list | None:
    if axis is None:
        return None
    extra = [axis.repeat, axis.span] if axis.repeat > 1 else []
    return [axis.space, axis.block, axis.tiles, *extra]


def spec_to_json(spec: PermutationSpec) -> dict[str, Any]:
    """The spec as plain JSON (order preserved: spaces, state keys and layers as discovered)."""
    return {
        "format": FORMAT,
        "spaces": [[s.id, s.size, s.fixed, s.reason] for s in spec.spaces.values()],
        "axes": [[key, [_axis_json(a) for a in axes]] for key, axes in spec.axes.items()],
        "layers": [{"name": lay.name, "kind": lay.kind, "weight": lay.weight, "bias": lay.bias,
                    "norm": list(lay.norm), "out": _axis_json(lay.out_axis),
                    "in": _axis_json(lay.in_axis), "index": lay.index,
                    "kernel": list(lay.kernel), "transposed": lay.transposed}
                   for lay in spec.layers],
        "unsupported": list(spec.unsupported),
        "head_groups": [[space, g.family, g.heads, g.dim, [list(p) for p in g.parts],
                         g.inner_reason] for space, g in spec.head_groups.items()],
    }


def spec_from_json(obj: dict[str, Any]) -> PermutationSpec:
    """Inverse of :func:`spec_to_json`. Raises ValueError, KeyError, TypeError, IndexError,
    AttributeError or OverflowError (an infinite number) when malformed."""
    if obj.get("format") != FORMAT:
        raise ValueError("another spec format")

    def axis(raw: list | None) -> Axis | None:
        if raw is None:
            return None
        return Axis(str(raw[0]), int(raw[1]), int(raw[2]), *(int(v) for v in raw[3:5]))

    spaces = {str(i): Space(str(i), int(size), bool(fixed), str(reason))
              for i, size, fixed, reason in obj["spaces"]}
    axes = {str(key): tuple(axis(a) for a in raw) for key, raw in obj["axes"]}
    layers = [Layer(str(d["name"]), str(d["kind"]), str(d["weight"]),
                    None if d["bias"] is None else str(d["bias"]), tuple(map(str, d["norm"])),
                    axis(d["out"]), axis(d["in"]), int(d["index"]),
                    tuple(int(k) for k in d["kernel"]), bool(d["transposed"]))
              for d in obj["layers"]]
    groups = {str(space): HeadGroup(str(fam), int(heads), int(dim),
                                    tuple((str(c), str(w)) for c, w in parts), str(why))
              for space, fam, heads, dim, parts, why in obj["head_groups"]}
    return PermutationSpec(spaces, axes, layers, [str(u) for u in obj["unsupported"]], groups)


def _entry(key: str) -> Path:
    return user_cache_dir("specs", "MAL_SPEC_CACHE") / f"{key}.json"


def load_spec(key: str) -> PermutationSpec | None:
    """The cached spec for ``key``; None when absent or unreadable (then it is rediscovered)."""
    try:
        return spec_from_json(loads_untrusted(_entry(key).read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            OverflowError):
        return None


def store_spec(key: str, spec: PermutationSpec) -> None:
    """Cache ``spec`` under ``key``; a cache that cannot be written is skipped silently (the
    spec is only rediscovered next time)."""
    entry = _entry(key)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, json.dumps(spec_to_json(spec)), durable=False)
    except OSError:
        pass
