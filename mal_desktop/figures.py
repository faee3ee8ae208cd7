"""The study's figures as PNG files, drawn with pyqtgraph offscreen from ``study.json``.

Not part of the core because it imports Qt. ``render_figures`` writes exactly the files named in
``mal_desktop.core.study.FIGURES`` (the report links them). Qt runs on the "offscreen" platform
unless the caller already chose one, so this works without a display (CLI, CI, tests).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401 - registers ImageExporter
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont

from .core.errors import MalError
from .core.io.atomic import atomic_write
from .core.study.report import FIGURES

# Distinguishable on white, in print and for common colour-vision deficiencies (Okabe-Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000"]
SYMBOLS = ["o", "s", "t", "d", "+", "x", "star", "p"]
SIZE = (900, 600)
MISSING = QColor("#d0d0d0")


def _app() -> None:
    """The Qt application to draw in: the running one (the GUI's), else a new one.

    A new one defaults to the "offscreen" platform, so drawing needs no display (CLI, CI). The
    platform is read when the application is created, so this is the place to choose it, not
    import time: importing this module changes nothing, and an application that already runs
    (with its own platform) is left alone.
    """
    if pg.QtWidgets.QApplication.instance() is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    pg.mkQApp("mal-figures")


def _plot(title: str, x_label: str, y_label: str) -> pg.PlotWidget:
    """A white plot with black axes (the figures go into documents, not the themed GUI)."""
    w = pg.PlotWidget(background="w")
    w.resize(*SIZE)
    item = w.getPlotItem()
    item.setTitle(title, color="k", size="12pt")
    for side, label in (("bottom", x_label), ("left", y_label)):
        axis = item.getAxis(side)
        axis.setPen(pg.mkPen("k"))
        axis.setTextPen(pg.mkPen("k"))
        axis.setLabel(label, color="k")
        axis.enableAutoSIPrefix(False)  # "(x0.001)" scale labels confuse readers
    return w


def _legend(w: pg.PlotWidget, offset: tuple[int, int] = (-10, 10)) -> pg.LegendItem:
    """A legend in a corner: offset (-10, 10) is the top right, (10, -10) the bottom left."""
    legend = w.getPlotItem().addLegend(offset=offset, labelTextColor="k")
    legend.setBrush(pg.mkBrush(255, 255, 255, 220))
    legend.setPen(pg.mkPen("#888888"))
    return legend


def _export(w: pg.PlotWidget, path: Path) -> Path:
    """Render the plot item into ``path`` atomically. Raises MalError when nothing is written."""
    pg.QtWidgets.QApplication.processEvents()

    def write(tmp: Path) -> None:
        exporter = pg.exporters.ImageExporter(w.getPlotItem())
        exporter.parameters()["width"] = SIZE[0]
        exporter.parameters()["background"] = QColor("white")
        exporter.export(str(tmp))
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise MalError(f"{path}: the figure could not be written")

    try:
        return atomic_write(path, write)
    finally:
        w.close()
        w.deleteLater()


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# -- heatmaps -----------------------------------------------------------------------------
def _heatmap(title: str, values: Sequence[Sequence[Any]], rows: Sequence[str],
             cols: Sequence[str], x_label: str, y_label: str,
             texts: Sequence[Sequence[str]] | None = None) -> pg.PlotWidget:
    """Coloured cells (viridis; missing cells grey) with the value written in each."""
    arr = np.array([[v if _finite(v) else np.nan for v in row] for row in values], dtype=float)
    w = _plot(title, x_label, y_label)
    item = w.getPlotItem()
    rgba = np.zeros((*arr.shape, 4), dtype=np.ubyte)
    rgba[...] = (MISSING.red(), MISSING.green(), MISSING.blue(), 255)
    finite = np.isfinite(arr)
    if finite.any():
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        norm = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        cmap = pg.colormap.get("viridis")
        mapped = cmap.map(np.where(finite, norm, 0.0).ravel(), mode="byte").reshape(*arr.shape, 4)
        rgba[finite] = mapped[finite]
    # ImageItem indexes [x, y]: columns along x, rows along y (row 0 drawn at the top).
    image = pg.ImageItem(np.ascontiguousarray(rgba.transpose(1, 0, 2)))
    item.addItem(image)
    item.invertY(True)
    item.setAspectLocked(False)
    item.getAxis("bottom").setTicks([[(j + 0.5, c) for j, c in enumerate(cols)]])
    item.getAxis("left").setTicks([[(i + 0.5, r) for i, r in enumerate(rows)]])
    item.getAxis("left").setWidth(max(40, 8 * max((len(r) for r in rows), default=0)))
    font = QFont()
    font.setPointSize(10)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            text = texts[i][j] if texts is not None else \
                (f"{arr[i, j]:.3f}" if finite[i, j] else "n/a")
            bright = finite[i, j] and (arr[i, j] - np.nanmin(arr)) > \
                0.6 * (np.nanmax(arr) - np.nanmin(arr) or 1.0)
            label = pg.TextItem(text, color="k" if bright or not finite[i, j] else "w",
                                anchor=(0.5, 0.5))
            label.setFont(font)
            label.setPos(j + 0.5, i + 0.5)
            item.addItem(label)
    item.setRange(xRange=(0, arr.shape[1]), yRange=(0, arr.shape[0]), padding=0.02)
    return w


def _fig_heatmap(data: dict[str, Any], which: str) -> pg.PlotWidget:
    heat = data["heatmaps"]
    what = "same data" if which == "same" else "different data"
    return _heatmap(f"Mean LMC loss of merging the head ({what}; lower is better)",
                    heat[which], heat["families"], heat["families"], "target family",
                    "base family")


_CASES = ("wider", "equal", "narrower")


def _law(data: dict[str, Any], key: str) -> dict[str, Any]:
    return next((x for x in data.get("laws", []) if str(x.get("law")) == key), {})


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if _finite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _fig_width_cases(data: dict[str, Any]) -> pg.PlotWidget:
    cases = _law(data, "4b").get("width_cases", [])
    cells: dict[tuple[int, int], list[dict]] = {}
    for c in cases:
        cells.setdefault((_CASES.index(c["out"]), _CASES.index(c["in"])), []).append(c)
    values = [[None] * 3 for _ in range(3)]
    texts = [["n/a"] * 3 for _ in range(3)]
    for (i, j), cs in cells.items():
        loss, lam = _mean([c["mean_loss"] for c in cs]), _mean([c["lambda"] for c in cs])
        values[i][j] = loss
        texts[i][j] = (f"loss {loss:.3f}\nlambda* {lam:.2f}\n"
                       f"target {cs[0]['target_out']}x{cs[0]['target_in']}")
    return _heatmap("Nine width cases: aligned mean LMC loss and lambda* (MLP middle layer)",
                    values, [f"out: base {c}" for c in _CASES], [f"in: base {c}" for c in _CASES],
                    "input side (base relative to target)", "output side", texts)


# -- line and point charts ----------------------------------------------------------------
def _families(data: dict[str, Any]) -> list[str]:
    return list(data["zoo"]["families"])


def _colour(data: dict[str, Any], family: str) -> str:
    fams = _families(data)
    return PALETTE[fams.index(family) % len(PALETTE)] if family in fams else PALETTE[-1]


def _fig_positions(data: dict[str, Any]) -> pg.PlotWidget:
    families = _law(data, "5").get("families", {})
    w = _plot("Layer position: aligned mean LMC loss of merging one layer", "layer position",
              "mean LMC loss")
    legend = _legend(w)
    fams = list(families)
    width = 0.8 / max(1, len(fams))
    for k, family in enumerate(fams):
        pos = families[family]["positions"]
        xs, hs, los, his = [], [], [], []
        for i, p in enumerate(("first", "middle", "last")):
            cell = pos.get(p, {}).get("mean_loss", {})
            if _finite(cell.get("mean")):
                xs.append(i - 0.4 + width * (k + 0.5))
                hs.append(cell["mean"])
                lo, hi = cell.get("ci", [cell["mean"], cell["mean"]])
                los.append(cell["mean"] - lo if _finite(lo) else 0.0)
                his.append(hi - cell["mean"] if _finite(hi) else 0.0)
        bars = pg.BarGraphItem(x=xs, height=hs, width=width * 0.9,
                               brush=_colour(data, family), pen=pg.mkPen("k", width=0.5))
        w.getPlotItem().addItem(bars)
        if xs:
            w.getPlotItem().addItem(pg.ErrorBarItem(x=np.array(xs), y=np.array(hs),
                                                    bottom=np.array(los), top=np.array(his),
                                                    beam=width * 0.3, pen=pg.mkPen("k")))
        legend.addItem(bars, family)
    w.getPlotItem().getAxis("bottom").setTicks([[(0, "first"), (1, "middle"), (2, "last")]])
    w.getPlotItem().setXRange(-0.6, 2.6, padding=0)
    return w


def _ratio_points(data: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Family -> (log2 width ratio, aligned lambda*) of every width-ratio curve."""
    curves = {r["key"]: r for r in data.get("curves", []) if "error" not in r}
    out: dict[str, list[tuple[float, float]]] = {}
    for row in data.get("parts", {}).get("ratios", []):
        r = curves.get(row["key"])
        if r is not None and _finite(r["aligned"]["threshold"]):
            out.setdefault(row["family"], []).append(
                (math.log2(row["target_width"] / row["base_width"]), r["aligned"]["threshold"]))
    return out


def _fig_width_ratio(data: dict[str, Any]) -> pg.PlotWidget:
    points = _ratio_points(data)
    w = _plot("Width ratio vs lambda* (aligned, middle layer)", "target width / base width",
              "lambda*")
    legend = _legend(w)
    fams = [f for f in _families(data) if f in points]
    for k, family in enumerate(fams):
        pts = points[family]
        # A small fixed offset per family keeps equal points of different families visible.
        offset = (k - (len(fams) - 1) / 2) * 0.04
        colour = _colour(data, family)
        scatter = pg.ScatterPlotItem([x + offset for x, _ in pts], [y for _, y in pts],
                                     symbol=SYMBOLS[k % len(SYMBOLS)], size=9,
                                     brush=pg.mkBrush(colour), pen=pg.mkPen("k", width=0.5))
        w.getPlotItem().addItem(scatter)
        levels = sorted({x for x, _ in pts})
        means = [_mean([y for x, y in pts if x == lv]) for lv in levels]
        w.getPlotItem().plot([lv + offset for lv in levels], means, pen=pg.mkPen(colour, width=2))
        legend.addItem(scatter, family)
    ticks = [(v, f"{2 ** v:g}" if v >= 0 else f"1/{2 ** -v:g}") for v in range(-3, 4)]
    w.getPlotItem().getAxis("bottom").setTicks([ticks])
    w.getPlotItem().setYRange(-0.05, 1.05, padding=0)
    return w


def _fig_iterated(data: dict[str, Any]) -> pg.PlotWidget:
    w = _plot("Iterated merges, each step at half its own lambda*: base-task accuracy",
              "steps", "accuracy (%)")
    legend = _legend(w, (10, -10))
    shown: set[str] = set()
    for it in data.get("iterated", []):
        if "error" in it:
            continue
        acc = [100.0 * a for a in it["accuracy"]]
        colour = _colour(data, it["family"])
        line = w.getPlotItem().plot(list(range(len(acc))), acc, pen=pg.mkPen(colour, width=2),
                                    symbol="o", symbolBrush=colour, symbolSize=6)
        if it["family"] not in shown:
            legend.addItem(line, it["family"])
            shown.add(it["family"])
    return w


def _fig_naive_aligned(data: dict[str, Any]) -> pg.PlotWidget:
    w = _plot("Naive (dashed) vs aligned (solid) whole-model merges", "lambda",
              "loss on the base task")
    legend = _legend(w)
    lambdas = data["lambdas"]
    shown: set[str] = set()
    for r in data.get("curves", []):
        if "error" in r or r["kind"] != "whole" or r["target_dataset"] != r["base_dataset"]:
            continue
        colour = _colour(data, r["base_family"])
        for series, style in (("naive", Qt.PenStyle.DashLine), ("aligned", Qt.PenStyle.SolidLine)):
            loss = [x if _finite(x) else np.nan for x in r[series]["loss"]]
            line = w.getPlotItem().plot(lambdas, loss,
                                        pen=pg.mkPen(colour, width=2, style=style))
            if series == "aligned" and r["base_family"] not in shown:
                legend.addItem(line, r["base_family"])
                shown.add(r["base_family"])
    return w


_DRAW: dict[str, Callable[[dict[str, Any]], pg.PlotWidget]] = {
    "heatmap_same": lambda d: _fig_heatmap(d, "same"),
    "heatmap_different": lambda d: _fig_heatmap(d, "different"),
    "width_cases": _fig_width_cases,
    "positions": _fig_positions,
    "width_ratio": _fig_width_ratio,
    "iterated": _fig_iterated,
    "naive_aligned": _fig_naive_aligned,
}


def render_figures(study: dict[str, Any] | str | Path, out_dir: str | Path | None = None
                   ) -> dict[str, Path]:
    """Draw every figure of ``FIGURES`` as PNG.

    study: the study data, or the path of a ``study.json`` (or of the folder holding it).
    out_dir: where the PNGs go (default: the folder of ``study.json``).
    Returns figure key -> written path.
    Raises MalError when the study data cannot be read or a figure cannot be written.
    """
    if isinstance(study, (str, Path)):
        path = Path(study)
        if path.is_dir():
            path = path / "study.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MalError(f"{path}: cannot read the study data ({exc})") from None
        out = Path(out_dir) if out_dir is not None else path.parent
    else:
        data = study
        if out_dir is None:
            raise MalError("render_figures needs out_dir when given the study data itself")
        out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _app()
    written = {}
    for key, (name, _caption) in FIGURES.items():
        written[key] = _export(_DRAW[key](data), out / name)
    return written
