"""The words of a width case: a compact form for narrow columns and the jargon explained.

The core names a step's width case in one line per side, e.g. "out: base narrower 64 <- 128
(drop 64); in: equal 784 (fixed)". That is exact but terse: "drop 64" and "(fixed)" mean nothing
to someone new, and the line is too long for a table column. Plain Python (no Qt).
"""

from __future__ import annotations

import re

_SIDE = re.compile(r"^(?P<side>out|in): (?:base (?P<case>wider|narrower) )?(?:equal )?"
                   r"(?P<base>\d+)(?: <- (?P<target>\d+))?(?: \((?P<extra>[^)]*)\))?"
                   r"(?P<fixed> \(fixed\))?$")

GLOSSARY = {
    "base wider": "base wider: the base layer has more units than the zoo layer; every zoo "
                  "unit gets a base slot and the base slots left over are zero-padded.",
    "base narrower": "base narrower: the zoo layer has more units than the base; the "
                     "best-matching zoo units are kept and the others dropped.",
    "zero-pad": "zero-pad N: N base units get no zoo partner and are merged with zeros "
                "(or keep their values, see 'Unmatched base units').",
    "drop": "drop N: N zoo units have no place in the base and are left out.",
    "equal": "equal N: both layers have N units on this side: a plain permutation.",
    "fixed": "fixed: these units cannot be reordered (the network's input pixels or its class "
             "outputs), so they are matched by index.",
    "out": "out: the layer's output units (rows of its weight).",
    "in": "in: the layer's input units (columns of its weight).",
}


_SHORT = {"zero-pad": "pad", "drop": "drop"}  # the case words without their unit counts


def _sides(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def side_units(text: str) -> dict[str, tuple[int, int]]:
    """Per side ("out", "in") the (base, zoo) unit counts a case line names; a side in another
    form is left out."""
    out = {}
    for part in _sides(text):
        m = _SIDE.match(part)
        if m is not None:
            base = int(m["base"])
            out[m["side"]] = (base, int(m["target"]) if m["target"] else base)
    return out


def rows_per_unit(text: str, side: str, base_rows: int, zoo_rows: int) -> int:
    """How many rows (weight entries along the axis) one unit of the case's ``side`` spans,
    when the case counts blocks of rows (an attention head's dims move together), else 1."""
    units = side_units(text).get(side)
    if units is None or 0 in units or (base_rows, zoo_rows) == units:
        return 1
    k = base_rows // units[0]
    return k if k > 1 and base_rows == k * units[0] and zoo_rows == k * units[1] else 1


def compact_case(text: str, sep: str = " \u00b7 ", counts: bool = True) -> str:
    """"out 64\u2190128 drop 64 \u00b7 in 784 fixed": the case in a table column's width (the
    text itself when it is not in the usual form). ``sep`` joins the sides ("\\n": one side per
    line); without ``counts`` the number of padded or dropped units, the difference of the two
    widths shown, is left out ("out 64\u2190128 drop"), as in the step table."""
    out = []
    for part in _sides(text):
        m = _SIDE.match(part)
        if m is None:
            return text
        words = f"{m['side']} {m['base']}"
        if m["target"]:
            words += f"\u2190{m['target']}"
        if m["extra"]:
            extra = m["extra"]
            words += f" {extra}" if counts else f" {_SHORT.get(extra.split()[0], extra)}"
        if m["fixed"]:
            words += " fixed"
        out.append(words)
    return sep.join(out)


def explain_case(text: str) -> str:
    """What the terms in ``text`` (a case line) mean, one line each, in a fixed order."""
    lines = []
    for term, meaning in GLOSSARY.items():
        if term in ("out", "in"):
            present = re.search(rf"\b{term}:", text) is not None
        elif term == "equal":
            present = re.search(r"\bequal \d", text) is not None
        else:
            present = term in text
        if present:
            lines.append(meaning)
    return "\n".join(lines)


__all__ = ["GLOSSARY", "compact_case", "explain_case"]
