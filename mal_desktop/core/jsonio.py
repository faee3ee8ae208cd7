"""Strict JSON out of the numbers the core produces.

JSON has no NaN or infinity, yet losses, barriers and thresholds can be non-finite, and results
hold numpy scalars and arrays. Python's ``json`` writes NaN as a bare ``NaN`` token that many
readers (browsers, jq, other languages) reject. Every JSON document the core writes for others
goes through :func:`json_safe` (or :func:`dumps`): non-finite floats become ``null``, so each
document parses anywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON can hold.

    - float NaN / inf / -inf (Python or numpy) -> None (``null``);
    - numpy scalars -> the Python bool / int / float they hold; numpy arrays -> nested lists;
    - tuples (and lists) -> lists, converted element by element;
    - dicts -> dicts with converted values; keys that are not str become ``str(key)``.
    Anything else is returned as is (``json.dumps`` still refuses types it does not know).
    """
    if isinstance(obj, float):  # also np.float64, a float subclass
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps(json_safe(obj), **kw)`` with ``allow_nan=False``: strict JSON text.

    kw: any other ``json.dumps`` option (indent, sort_keys, ...); ``allow_nan`` is always False.
    Raises TypeError for values JSON cannot hold (as ``json.dumps``).
    """
    kw["allow_nan"] = False
    return json.dumps(json_safe(obj), **kw)


#: Deepest nesting accepted in JSON read from files we did not write. Our own documents nest a
#: handful of levels; Python's decoder recurses once per level and fails past ~1000.
MAX_UNTRUSTED_DEPTH = 64

_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))


def json_depth(raw: bytes) -> int:
    """Deepest nesting of [ and { outside strings, counted without parsing (the decoder would
    recurse once per level). Escapes go first (an escaped backslash, then an escaped quote),
    then everything but brackets and quotes; a quote then toggles "inside a string"."""
    bare = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    arr = np.frombuffer(bare, dtype=np.uint8)
    inside = (np.cumsum(arr == ord('"')) % 2).astype(bool)
    steps = ((arr == ord("[")) | (arr == ord("{"))).astype(np.int64) \
        - ((arr == ord("]")) | (arr == ord("}"))).astype(np.int64)
    steps[inside] = 0
    return int(np.cumsum(steps).max(initial=0))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads_untrusted(raw: bytes | str, max_depth: int = MAX_UNTRUSTED_DEPTH) -> Any:
    """Parse JSON from a file someone else may have crafted.

    Refuses nesting deeper than ``max_depth`` (measured before parsing) and duplicate keys (two
    readers could disagree on which one counts). Raises ValueError with a one-line reason:
    "nested N levels deep (at most M)", "duplicate key 'k'", "not UTF-8", or the decoder's
    message with its line number.
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    depth = json_depth(data)
    if depth > max_depth:
        raise ValueError(f"nested {depth} levels deep (at most {max_depth})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.msg}") from None
    except RecursionError:  # only if max_depth was set above the decoder's own limit
        raise ValueError("nested too deeply") from None


__all__ = ["json_safe", "dumps", "json_depth", "loads_untrusted", "MAX_UNTRUSTED_DEPTH"]
