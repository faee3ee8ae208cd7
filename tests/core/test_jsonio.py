"""Strict JSON out of core results (core/jsonio.py): no NaN tokens, numpy values as plain JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mal_desktop.core import jsonio
from mal_desktop.core.jsonio import json_safe


def _strict_loads(text: str):
    """json.loads that fails on the NaN / Infinity tokens Python's json would accept."""
    def refuse(token: str):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_become_null_everywhere() -> None:
    doc = {"loss": math.nan, "barrier": math.inf, "low": -math.inf, "ok": 0.5,
           "curve": [1.0, math.nan, (2.0, math.inf)], "nested": {"x": {"y": math.nan}}}
    assert json_safe(doc) == {"loss": None, "barrier": None, "low": None, "ok": 0.5,
                              "curve": [1.0, None, [2.0, None]], "nested": {"x": {"y": None}}}


def test_numpy_scalars_and_arrays_become_plain_json() -> None:
    doc = {"f32": np.float32(0.25), "f64": np.float64(math.nan), "i": np.int64(3),
           "b": np.bool_(True), "a": np.array([[1.0, np.nan], [np.inf, 2.0]]),
           "ints": np.arange(3, dtype=np.int32)}
    safe = json_safe(doc)
    assert safe == {"f32": 0.25, "f64": None, "i": 3, "b": True,
                    "a": [[1.0, None], [None, 2.0]], "ints": [0, 1, 2]}
    assert type(safe["i"]) is int and type(safe["b"]) is bool and type(safe["f32"]) is float


def test_tuples_become_lists_and_keys_strings() -> None:
    assert json_safe((1, (2, 3))) == [1, [2, 3]]
    assert json_safe({1: "a", ("x", 2): "b", "k": "c"}) == {"1": "a", "('x', 2)": "b", "k": "c"}
    # the input is not modified
    doc = {"t": (1.0, math.nan)}
    json_safe(doc)
    assert isinstance(doc["t"], tuple) and math.isnan(doc["t"][1])


def test_dumps_writes_strict_json_and_passes_options() -> None:
    text = jsonio.dumps({"b": math.nan, "a": np.float64(1.5)}, indent=1, sort_keys=True)
    assert _strict_loads(text) == {"a": 1.5, "b": None}
    assert text.index('"a"') < text.index('"b"') and "\n " in text
    # allow_nan=True cannot sneak NaN back in: the data has none left anyway
    assert "NaN" not in jsonio.dumps([math.nan], allow_nan=True)


def test_dumps_still_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        jsonio.dumps({"x": object()})
