"""`mal study --small` end to end: the study, its report and every figure as a real PNG."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from mal_desktop.cli import main
from mal_desktop.core.study import FIGURES
from mal_desktop.figures import SIZE, render_figures

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _study_cli(argv: list[str]) -> tuple[int, dict]:
    """`mal ARGV` in-process: (exit code, the JSON it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, json.loads(out.getvalue())


def _distinct_colours(image: QImage) -> int:
    colours = set()
    for x in range(0, image.width(), 7):
        for y in range(0, image.height(), 7):
            colours.add(image.pixel(x, y))
    return len(colours)


def test_small_study_writes_report_and_every_figure(qapp, tmp_path: Path,
                                                   small_study_zoo_dir: Path) -> None:
    out = tmp_path / "study"  # the zoo is shared with the core study tests: trained once
    rc, doc = _study_cli(["study", "--small", "--zoo", str(small_study_zoo_dir), "--out",
                          str(out), "--json", "--quiet"])
    assert rc == 0
    assert set(doc["figures"]) == set(FIGURES)
    report = (out / "report.md").read_text()
    for key, (name, _caption) in FIGURES.items():
        path = out / name
        assert doc["figures"][key] == str(path)
        image = QImage(str(path))
        assert not image.isNull(), name
        assert image.width() == SIZE[0]
        assert _distinct_colours(image) > 5, f"{name} looks blank"
        assert f"]({name})" in report
    assert set(doc["verdicts"]) == {"1", "2", "3", "4a", "4b", "5", "6"}
    for size in (path.stat().st_size for path in (out / n for n, _ in FIGURES.values())):
        assert size < 300_000
    # Re-rendering from study.json alone gives the same set of files (figures need no rerun).
    again = render_figures(out / "study.json", tmp_path / "again")
    assert sorted(p.name for p in again.values()) == sorted(n for n, _ in FIGURES.values())


def test_missing_values_are_drawn_not_fatal(qapp, tmp_path: Path) -> None:
    data = {"heatmaps": {"families": ["a", "b"], "same": [[0.5, None], [float("nan"), 1.0]],
                         "different": [[None, None], [None, None]]},
            "laws": [{"law": "4b", "width_cases": []}, {"law": "5", "families": {}}],
            "parts": {"ratios": []},
            "zoo": {"families": ["a", "b"]}, "settings": {"iterated_lambda": 0.2},
            "iterated": [], "curves": [], "lambdas": [0.0, 1.0]}
    written = render_figures(data, tmp_path)
    # every figure is drawn (none skipped over its missing values), as a real PNG
    assert written == {key: tmp_path / name for key, (name, _caption) in FIGURES.items()}
    for path in written.values():
        image = QImage(str(path))
        assert not image.isNull() and image.width() == SIZE[0], path.name
