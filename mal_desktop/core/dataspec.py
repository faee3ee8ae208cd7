"""Where a dataset spec names files: the syntax plans and projects store and move.

A dataset is named by a registered name ("digits"), a user ``.npz`` file by path, or
``text:PATH[;tokenizer=FILE][;context=N]`` (:mod:`.evaluate.text` reads it). Plans and projects
store paths relative to their own folder; this module rewrites the paths inside a spec and
leaves the rest alone, so that ``text:`` and its options survive the trip (a text spec was
once treated as one path: "text:/a/b.txt" became "<folder>/text:/a/b.txt").
"""

from __future__ import annotations

import os
from typing import Callable

TEXT_PREFIX = "text:"
_PATH_OPTIONS = ("tokenizer",)  # text options whose value is a file


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names files (a .npz path or text:PATH) rather than a registered name."""
    return spec.startswith(TEXT_PREFIX) or spec.endswith(".npz") or "/" in spec \
        or os.sep in spec


def map_spec_paths(spec: str, fix: Callable[[str], str]) -> str:
    """``spec`` with ``fix`` applied to every path in it: a .npz path, or a text spec's PATH and
    tokenizer FILE (its prefix and other options kept); a registered name unchanged."""
    if not spec or not is_file_spec(spec):
        return spec
    if not spec.startswith(TEXT_PREFIX):
        return fix(spec)
    where, *options = spec[len(TEXT_PREFIX):].split(";")
    kept = []
    for option in options:
        key, sep, value = option.partition("=")
        kept.append(f"{key}={fix(value)}" if key in _PATH_OPTIONS and sep and value else option)
    return ";".join([TEXT_PREFIX + (fix(where) if where else where), *kept])


def spec_label(spec: str) -> str:
    """A short name for ``spec`` in a list: a registered name as it is, a file by its own name,
    "text: docs" for text (a folder's bare name read like an image set's)."""
    if not is_file_spec(spec):
        return spec
    if spec.startswith(TEXT_PREFIX):
        where = spec[len(TEXT_PREFIX):].split(";", 1)[0]
        return f"text: {os.path.basename(os.path.normpath(where)) or where}"
    return os.path.basename(os.path.normpath(spec))
