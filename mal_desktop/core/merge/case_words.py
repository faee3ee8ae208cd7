"""The words of a width case: a compact form for narrow columns and the jargon explained.

The pre-flight names a step's width case in one line per side, e.g. "out: base narrower 64 <- 128
(drop 64); in: equal 784 (fixed)", or "out: base wider 4 <- 2 heads of 16 (zero-pad 2)" where a
unit spans several rows. That is exact but terse: "drop 64" and "(fixed)" mean nothing to someone
new, and the line is too long for a table column. Shared by the CLI and the GUI (no Qt).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_SIDE = re.compile(r"^(?P<side>out|in): (?:base (?P<case>wider|narrower) )?(?:equal )?"
                   r"(?P<base>\d+)(?: <- (?P<target>\d+))?"
                   r"(?: (?P<unit>(?:heads|head groups|blocks)) of (?P<per>\d+))?"
                   r"(?: \((?P<extra>[^)]*)\))?(?P<fixed> \(fixed\))?$")

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
    "heads of": "heads of N: the side is counted in attention heads of N rows or features "
                "each; a head's dims move together, so heads are matched, padded and dropped "
                "whole.",
    "head groups of": "head groups of N: the query heads sharing one key/value head (grouped-"
                      "query attention), N rows or features in all, counted as one unit: they "
                      "move with their key/value head, and chain alignment may reorder them "
                      "inside their group.",
    "blocks of": "blocks of N: each unit spans N features (a channel's H x W values after a "
                 "flatten, say), which move together.",
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
    """How many of an alignment's units (``base_rows`` and ``zoo_rows`` of them: rows of the
    weight, or attention head dims) one unit of the case's ``side`` spans, when the case counts
    blocks of them (an attention head's dims move together), else 1."""
    units = side_units(text).get(side)
    if units is None or 0 in units or (base_rows, zoo_rows) == units:
        return 1
    k = base_rows // units[0]
    return k if k > 1 and base_rows == k * units[0] and zoo_rows == k * units[1] else 1


def unit_of(text: str, side: str) -> str:
    """What the case counts on ``side`` where it is not rows or features: "heads",
    "head groups", "blocks"; "" otherwise."""
    for part in _sides(text):
        m = _SIDE.match(part)
        if m is not None and m["side"] == side:
            return m["unit"] or ""
    return ""


def counts_in_case_units(text: str, side: str, base: int, target: int,
                         counts: Sequence[int]) -> list[int]:
    """``counts`` of an alignment's units (matched, padded, dropped: attention head dims where
    the case counts heads) in the units the case counts, so that the two agree."""
    k = rows_per_unit(text, side, base, target)
    return [c // k for c in counts] if all(c % k == 0 for c in counts) else list(counts)


def compact_case(text: str, sep: str = " \u00b7 ", counts: bool = True,
                 rows: bool = False) -> str:
    """"out 64\u2190128 drop 64 \u00b7 in 784 fixed": the case in a table column's width (the
    text itself when it is not in the usual form). ``sep`` joins the sides ("\\n": one side per
    line); without ``counts`` the number of padded or dropped units, the difference of the two
    widths shown, is left out ("out 64\u2190128 drop"), as in the step table. With ``rows``, a
    side counted in heads or blocks is shown in the rows or features they span ("out: base
    wider 4 <- 2 heads of 16" as "out 64\u219032"), as the weight's shape counts them;
    otherwise the unit is named ("out 4\u21902 heads")."""
    out = []
    for part in _sides(text):
        m = _SIDE.match(part)
        if m is None:
            return text
        per = int(m["per"]) if rows and m["per"] else 1
        words = f"{m['side']} {int(m['base']) * per}"
        if m["target"]:
            words += f"\u2190{int(m['target']) * per}"
        if m["unit"] and per == 1:  # what is counted, where it is not rows
            words += f" {m['unit']}"
        if m["extra"]:
            kind, _, n = m["extra"].partition(" ")
            if not counts:
                words += f" {_SHORT.get(kind, m['extra'])}"
            else:
                words += f" {kind} {int(n) * per}" if n.isdigit() else f" {m['extra']}"
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


__all__ = ["GLOSSARY", "compact_case", "counts_in_case_units", "explain_case", "rows_per_unit",
           "side_units", "unit_of"]


def query_groups_text(groups: int, reordered: int) -> str:
    """What a grouped-query side's alignment did inside the groups (``SideReport.groups``)."""
    return (f"query heads reordered inside {reordered} of {groups} key/value head "
            f"group{'s' if groups != 1 else ''}")
