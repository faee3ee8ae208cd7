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


__all__ = ["json_safe", "dumps"]
