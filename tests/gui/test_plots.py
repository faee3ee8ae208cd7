"""CurvePlot and DiagnosticsPanel: points land in the plot items, markers, export files."""

from __future__ import annotations

import csv
import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mal_desktop.core.evaluate.metrics import (CurveMetrics, CurvePoint,  # noqa: E402
                                               CurveResult, lambda_grid)
from mal_desktop.core.merge.results import SideReport, StepDiagnostics  # noqa: E402
from mal_desktop.gui.plots.curve_plot import CurvePlot  # noqa: E402
from mal_desktop.gui.plots.diagnostics import DiagnosticsPanel, matrix_image  # noqa: E402
from mal_desktop.gui.plots.export import csv_text  # noqa: E402
from mal_desktop.gui.palette import plot_colors  # noqa: E402

pytestmark = pytest.mark.gui

GRID = lambda_grid(5)  # 0, .25, .5, .75, 1
NAIVE_LOSS = [0.2, 0.9, 1.4, 0.8, 0.3]
ALIGNED_LOSS = [0.2, 0.3, 0.35, 0.3, 0.3]
NAIVE_ACC = [0.95, 0.6, 0.4, 0.7, 0.9]
ALIGNED_ACC = [0.95, 0.945, 0.93, 0.9, 0.9]


def _result() -> CurveResult:
    return CurveResult(tuple(GRID), CurveMetrics.from_points(GRID, NAIVE_LOSS, NAIVE_ACC),
                       CurveMetrics.from_points(GRID, ALIGNED_LOSS, ALIGNED_ACC), "digits")


@pytest.fixture
def curve(qtbot) -> CurvePlot:
    plot = CurvePlot()
    qtbot.addWidget(plot)
    plot.resize(900, 400)
    return plot


def test_add_point_fills_curves_out_of_order_with_nan(curve: CurvePlot) -> None:
    curve.add_point(CurvePoint("aligned", 2, 0.5, 0.35, 0.93))
    curve.add_point(CurvePoint("aligned", 0, 0.0, 0.2, 0.95))
    curve.add_point(CurvePoint("naive", 1, 0.25, float("nan"), 0.6))
    curve.add_point(CurvePoint("naive", 0, 0.0, float("inf"), 0.95))
    curve.refresh()
    x, y = curve.series_data("aligned", "loss")
    assert x[0] == 0.0 and x[2] == 0.5 and math.isnan(x[1])  # index 1 not reported yet
    assert y[0] == pytest.approx(0.2) and y[2] == pytest.approx(0.35)
    _, acc = curve.series_data("aligned", "accuracy")
    assert acc[2] == pytest.approx(93.0)  # shown in percent
    nx, ny = curve.series_data("naive", "loss")
    assert list(nx) == [0.0, 0.25]
    assert math.isnan(ny[0]) and math.isnan(ny[1])  # inf drawn as a gap, NaN tolerated


def test_points_arrive_through_the_throttle_timer(qtbot, curve: CurvePlot) -> None:
    for i, lam in enumerate(GRID):
        curve.add_point(CurvePoint("naive", i, lam, NAIVE_LOSS[i], NAIVE_ACC[i]))
    qtbot.waitUntil(lambda: curve.series_data("naive", "loss")[1].size == len(GRID),
                    timeout=2000)
    assert list(curve.series_data("naive", "loss")[1]) == pytest.approx(NAIVE_LOSS)


def test_buffers_grow_beyond_the_preallocation(curve: CurvePlot) -> None:
    grid = lambda_grid(101)
    for i, lam in enumerate(grid):
        curve.add_point(CurvePoint("aligned", i, lam, lam * lam, 1.0 - lam))
    curve.refresh()
    x, y = curve.series_data("aligned", "loss")
    assert x.size == 101 and y[100] == pytest.approx(1.0)
    # every point survives the growth (the buffers start at 32 and double twice), not only the last
    assert list(x) == pytest.approx(list(grid))
    assert list(y) == pytest.approx([lam * lam for lam in grid])
    _, acc = curve.series_data("aligned", "accuracy")
    assert list(acc) == pytest.approx([100.0 * (1.0 - lam) for lam in grid])


def test_set_result_marks_barrier_and_threshold(curve: CurvePlot) -> None:
    r = _result()
    curve.set_result(r)
    # lambda* lines at the metrics' thresholds.
    line = curve.threshold_lines[("aligned", "accuracy")]
    assert line.isVisible() and line.value() == pytest.approx(r.aligned.threshold)
    assert curve.threshold_lines[("naive", "loss")].value() == pytest.approx(r.naive.threshold)
    # The naive barrier bar spans from the chord to the curve at its worst lambda (0.5).
    bx, by = curve.barrier_bars["naive"].getData()
    chord_mid = 0.5 * NAIVE_LOSS[0] + 0.5 * NAIVE_LOSS[-1]
    assert list(bx) == [0.5, 0.5]
    assert list(by) == pytest.approx([chord_mid, 1.4])
    assert by[1] - by[0] == pytest.approx(r.naive.barrier)
    assert f"{r.naive.barrier:.3f}" in curve.barrier_texts["naive"].textItem.toPlainText()
    summary = curve.summary_text()
    assert "digits" in summary and summary.startswith("mean LMC loss")
    # the summary gives both barriers, as `mal curve` prints them
    assert (f"barrier naive {r.naive.barrier:.3f} \u00b7 aligned {r.aligned.barrier:.3f}"
            in summary) and "end point" not in summary
    curve.clear()
    assert not curve.threshold_lines[("aligned", "accuracy")].isVisible()
    assert curve.series_data("naive", "loss")[0].size == 0


def test_lambda_line_drag_emits_and_set_lambda_does_not(qtbot, curve: CurvePlot) -> None:
    with qtbot.assertNotEmitted(curve.lambdaDragged):
        curve.set_lambda(0.4)
    assert curve.lambda_value() == pytest.approx(0.4)
    line = curve.lambda_lines[0]
    with qtbot.waitSignal(curve.lambdaDragged) as blocker:
        line.setValue(0.7)  # what a mouse drag does, then it reports the release
        line.sigPositionChangeFinished.emit(line)
    assert blocker.args == [pytest.approx(0.7)]
    assert curve.lambda_lines[1].value() == pytest.approx(0.7)  # mirrored on the other plot
    curve.set_lambda(float("nan"))
    assert not line.isVisible()


def test_layer_level_curve_leads_with_mean_loss_lambda_star_and_accuracy_at_lambda(
        curve: CurvePlot) -> None:
    # A transplanted layer: the loss climbs to its worst at lambda 1, so the chord barrier is 0
    # and says nothing; the summary leads with what matters and marks the barrier so.
    climb = [0.2, 0.4, 0.6, 0.9, 1.2]
    r = CurveResult(tuple(GRID), CurveMetrics.from_points(GRID, climb, NAIVE_ACC),
                    CurveMetrics.from_points(GRID, climb, ALIGNED_ACC), "digits")
    assert r.naive.barrier == pytest.approx(0.0, abs=1e-9)
    curve.show_curve(r, "Step 1: z:a -> a", lam=0.5)
    summary = curve.summary_text()
    assert summary.startswith("mean LMC loss") and "\u03bb*" in summary
    assert "accuracy at \u03bb 0.50 naive 40.0% \u00b7 aligned 93.0%" in summary
    assert "interpolated" not in summary  # 0.5 is a grid point: measured
    curve.show_curve(r, "Step 1: z:a -> a", lam=0.55)  # off the grid: read off a line
    assert "accuracy at \u03bb 0.55" in curve.summary_text()
    assert "(interpolated between grid points)" in curve.summary_text()
    curve.show_curve(r, "Step 1: z:a -> a", lam=0.5)
    summary = curve.summary_text()
    # "0.000 (end point worst)" beside a loss climbing 0.2 -> 1.2 read as "no problem"
    assert ("barrier naive 0.000 (no bump: the loss climbs to \u03bb 1) \u00b7 aligned 0.000 "
            "(no bump: the loss climbs to \u03bb 1)") in summary
    assert curve.chords["naive"].getData()[0] is None or curve.chords["naive"].getData()[0].size == 0
    assert curve.title_text() == "Step 1: z:a -> a"
    assert "perplexity" not in summary  # a classifier's loss is no perplexity


def test_a_text_curve_shows_perplexity_at_lambda(curve: CurvePlot) -> None:
    """Scored per token, the loss is log perplexity: the summary gives exp(loss) at lambda."""
    losses = [3.0, 3.2, 3.5, 3.9, 4.4]
    r = CurveResult(tuple(GRID), CurveMetrics.from_points(GRID, losses, NAIVE_ACC),
                    CurveMetrics.from_points(GRID, losses, ALIGNED_ACC), "python-code",
                    per_token=True)
    curve.show_curve(r, "Step 1: z:a -> a", lam=0.5)
    expected = f"{math.exp(np.interp(0.5, GRID, losses)):.2f}"
    assert f"perplexity at \u03bb 0.50 naive {expected} \u00b7 aligned {expected}" in \
        curve.summary_text()


def test_lambda_value_is_shown_where_the_line_is(curve: CurvePlot) -> None:
    curve.set_lambda(0.3)
    assert curve.lambda_value() == pytest.approx(0.3)
    assert "\u03bb = 0.30" in curve._legend.text()  # one label, from the line's own value
    # nothing is written over the curves: the lines carry no text labels
    assert all(getattr(line, "label", None) is None for line in curve.lambda_lines)


def test_curve_exports_print_figures_and_csv_with_provenance(tmp_path, curve: CurvePlot) -> None:
    from PySide6.QtGui import QImage

    curve.set_result(_result())
    curve.set_provenance({"base model": "base (b.safetensors)", "step": "Step 1: z:a -> a",
                          "dataset": "digits", "alignment": "chain"})
    png = curve.export_png(tmp_path / "curve.png", dpi=300)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage(str(png))
    assert image.width() >= 2 * 4.0 * 300 * 0.95  # two 4.2-inch plots at 300 dpi, not 797 px
    assert round(image.dotsPerMeterX() * 0.0254) == 300
    corner = image.pixelColor(2, image.height() - 2)
    assert (corner.red(), corner.green(), corner.blue()) == (255, 255, 255)  # print: white
    loss_png = curve.export_png(tmp_path / "loss.png", "loss", dpi=150)
    assert QImage(str(loss_png)).width() == pytest.approx(4.2 * 150, abs=2)
    svg = curve.export_figure(tmp_path / "curve.svg")
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    path = curve.export_csv(tmp_path / "curve.csv")
    with open(path, newline="", encoding="utf-8") as f:
        lines = f.read().splitlines()
    meta = [line for line in lines if line.startswith("# ")]
    assert "# step: Step 1: z:a -> a" in meta and "# dataset: digits" in meta
    assert "# alignment: chain" in meta and any(m.startswith("# mal_desktop: ") for m in meta)
    assert any(m.startswith("# base model: base") for m in meta)
    rows = list(csv.reader(line for line in lines if not line.startswith("#")))
    assert rows[0] == ["lambda", "naive_loss", "naive_accuracy", "aligned_loss",
                       "aligned_accuracy"]
    assert len(rows) == 1 + len(GRID)
    assert [float(v) for v in rows[3]] == pytest.approx(
        [0.5, NAIVE_LOSS[2], NAIVE_ACC[2], ALIGNED_LOSS[2], ALIGNED_ACC[2]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_csv_text_keeps_non_finite_values() -> None:
    text = csv_text(["a", "b"], [[float("nan"), float("-inf")], [0.1, None]])
    assert text.splitlines() == ["a,b", "nan,-inf", "0.1,"]


def data_lines(path) -> list[str]:
    """The lines of an exported CSV below its # provenance lines."""
    with open(path, encoding="utf-8") as f:
        return [line for line in f.read().splitlines() if not line.startswith("#")]


def _diagnostics(index: int = 1) -> StepDiagnostics:
    rng = np.random.default_rng(index)
    q_out = np.zeros((6, 4), np.float32)  # base wider: 4 matched, 2 zero-padded
    q_out[[5, 0, 2, 3], [0, 1, 2, 3]] = 1
    q_in = np.zeros((3, 5), np.float32)  # base narrower: 3 matched, 2 dropped
    q_in[[0, 1, 2], [4, 0, 2]] = 1
    return StepDiagnostics(
        index=index, label="zoo:layers.0 -> layers.0", align="chain",
        case_text="out: base wider 6 <- 4 (zero-pad 2); in: base narrower 3 <- 5 (drop 2)",
        out=SideReport(6, 4, "wider", 4, 2, 0), inp=SideReport(3, 5, "narrower", 3, 0, 2),
        objective=(1.0, 2.5, 2.75, 2.75), costs=rng.normal(size=4), out_matrix=q_out,
        in_matrix=q_in)


@pytest.fixture
def diag(qtbot) -> DiagnosticsPanel:
    panel = DiagnosticsPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 600)
    return panel


def test_show_step_fills_all_four_plots(diag: DiagnosticsPanel) -> None:
    d = _diagnostics()
    diag.show_step(d)
    img = diag.image.image
    assert img.shape == (6, 4, 4) and diag.image.isVisible()
    colors = plot_colors()
    assert (img[5, 0, :3] == np.array(matrix_image(d.out_matrix, colors)[5, 0, :3])).all()
    heights = {c: list(diag.bars[c].opts["height"]) for c in diag.bars}
    assert heights == {"matched": [4.0, 3.0], "padded": [2.0, 0.0], "dropped": [0.0, 2.0]}
    x, y = diag.histogram.getData()
    assert y.sum() == pytest.approx(4)  # every matched cost counted once
    ox, oy = diag.objective.getData()
    assert list(ox) == [1, 2, 3, 4] and list(oy) == [1.0, 2.5, 2.75, 2.75]
    diag._side.setCurrentIndex(1)  # the in side
    assert diag.image.image.shape == (3, 5, 4)


def test_matrix_image_marks_padded_rows_and_dropped_columns() -> None:
    colors = plot_colors()
    q = np.zeros((3, 4))
    q[0, 1] = q[2, 3] = 1  # row 1 padded; columns 0 and 2 dropped
    img = matrix_image(q, colors)
    matched = img[0, 1]
    assert (img[2, 3] == matched).all()
    assert not (img[1, 1] == matched).all() and not (img[0, 0] == matched).all()
    assert (img[1, 0] != img[0, 3]).any()  # a padded cell differs from a plain empty cell


def test_show_step_names_the_step_where_it_is_now_and_empty_state(diag: DiagnosticsPanel) -> None:
    diag.show_step(_diagnostics(0), index=2, stale="the plan changed since this run")
    assert diag.current is not None and "Step 3:" in diag._header.text()
    assert "Stale" in diag._header.text()
    assert "drop N" in diag._header.toolTip()  # the jargon of the case explained
    diag.show_empty("nothing here")
    assert diag.current is None and diag._header.text() == "nothing here"
    assert not diag.image.isVisible()
    # the matrix's note does not contradict a header naming a step not run yet
    assert diag.matrix_note.textItem.toPlainText() == "nothing to show yet"
    # Empty plots show no tick labels (they only stacked on each other).
    assert not diag.matrix_plot.getAxis("left").style["showValues"]


def test_matrix_keeps_square_cells(diag: DiagnosticsPanel) -> None:
    assert diag.matrix_plot.getViewBox().state["aspectLocked"] == 1.0


def test_a_large_permutation_shows_every_pair_and_only_unit_ticks(qtbot,
                                                                 diag: DiagnosticsPanel) -> None:
    """A 344 x 344 permutation drawn in a couple of hundred pixels: each pair is a dot of a few
    pixels (as an image, most one-pixel pairs were sampled away), and the axes tick unit
    indices only, not the view's empty margins (-250 .. 600 in a wide plot)."""
    n = 344
    q = np.zeros((n, n), np.float32)
    perm = np.random.default_rng(0).permutation(n)
    q[np.arange(n), perm] = 1
    d = _diagnostics()
    diag.show_step(StepDiagnostics(
        index=1, label="z:a -> a", align="chain", case_text="out: equal 344; in: equal 344",
        out=SideReport(n, n, "equal", n, 0, 0), inp=SideReport(n, n, "equal", n, 0, 0),
        objective=d.objective, costs=d.costs, out_matrix=q, in_matrix=q))
    x, y = diag.pairs.getData()
    assert sorted(zip(y - 0.5, x - 0.5)) == sorted(zip(range(n), perm))
    assert diag.pairs.opts["pxMode"] and diag.pairs.opts["size"] >= 3
    diag.resize(900, 400)  # a wide matrix plot: the square view reaches beyond the columns
    qtbot.wait(50)
    for side, extent in (("bottom", n), ("left", n)):
        axis = diag.matrix_plot.getAxis(side)
        values = [v for _, vs in axis.tickValues(-250, 600, 300) for v in vs]
        assert values and all(0 <= v <= extent for v in values), (side, values)
        # labels far enough apart to be read: 300 px for 850 units
        assert all((b - a) * 300 / 850 >= 30 for a, b in zip(values, values[1:])), values
    # the rows' axis is inverted (row 0 on top): it asks from the top down, and gets the same
    left = diag.matrix_plot.getAxis("left")
    values = [v for _, vs in left.tickValues(350.9, -6.9, 200) for v in vs]
    assert values and all(0 <= v <= n and v == int(v) for v in values), values
    assert all((b - a) * 200 / 357.8 >= 30 for a, b in zip(values, values[1:])), values
    # a narrow matrix (32 units in 40 px) keeps its labels apart too: 0 and 20 or 30, not 0..30
    axis = diag.matrix_plot.getAxis("bottom")
    axis.extent = 32
    values = [v for _, vs in axis.tickValues(-8, 40, 60) for v in vs]
    assert values[0] == 0 and all((b - a) * 60 / 48 >= 30 for a, b in zip(values, values[1:]))


def test_no_alignment_and_missing_matrix_are_explained(diag: DiagnosticsPanel) -> None:
    d = StepDiagnostics(0, "z:a -> a", "none", "out: equal 4; in: equal 4",
                        SideReport(4, 4, "equal", 4, 0, 0), SideReport(4, 4, "equal", 4, 0, 0),
                        objective=())
    diag.show_step(d)
    assert "no alignment" in diag.matrix_note.textItem.toPlainText()
    assert diag.objective.getData()[0] is None or len(diag.objective.getData()[0]) == 0


def test_diagnostics_export(tmp_path, diag: DiagnosticsPanel) -> None:
    diag.show_step(_diagnostics())
    assert diag.export_png(tmp_path / "all.png").read_bytes()[:4] == b"\x89PNG"
    assert diag.export_png(tmp_path / "m.png", "matrix").stat().st_size > 500
    assert diag.export_figure(tmp_path / "all.svg").read_text(encoding="utf-8").count("<svg")
    with open(diag.export_csv(tmp_path / "m.csv", "matrix"), encoding="utf-8") as f:
        rows = list(csv.reader(line for line in f if not line.startswith("#")))
    assert rows[0] == ["side", "base_unit", "zoo_unit"]
    assert ["out", "5", "0"] in rows and ["in", "0", "4"] in rows and len(rows) == 1 + 4 + 3
    assert data_lines(diag.export_csv(tmp_path / "j.csv", "objective"))[1:] == [
        "1,1.0", "2,2.5", "3,2.75", "4,2.75"]
    assert data_lines(diag.export_csv(tmp_path / "u.csv", "units"))[2] == "in,3,5,narrower,3,0,2,0,0"
    with open(tmp_path / "u.csv", encoding="utf-8") as f:
        assert f.readline() == "# step: Step 2: zoo:layers.0 -> layers.0\n"
    with pytest.raises(ValueError):
        diag.export_csv(tmp_path / "x.csv", "nonsense")


def _scores():
    from mal_desktop.core.evaluate.metric_registry import SampleScores

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2], np.int64)
    preds = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2, 2], np.int64)
    return SampleScores(labels, preds, preds == labels, np.full(10, 0.5), np.full(10, 0.9),
                        np.array(["zero"] * 3 + ["one"] * 2 + ["two"] * 5), 3)


def test_cell_details_export_figures_and_csv_like_the_other_plots(qtbot, tmp_path) -> None:
    """The Evaluate panel's drill-down exports as the curve and diagnostics do: print PNG at
    the chosen DPI (light, titled), SVG, and the data as CSV with a provenance header."""
    from PySide6.QtGui import QImage

    from mal_desktop.gui.plots.cell_details import CellDetails

    details = CellDetails()
    qtbot.addWidget(details)
    details.resize(700, 400)
    assert not details.export_button.isEnabled()  # nothing shown: nothing to export
    with pytest.raises(ValueError):
        details.export_csv(tmp_path / "x.csv", "accuracy")
    details.set_provenance({"model_ref": "zoo/m.safetensors", "model_sha256": "ab12",
                            "dataset_fingerprint": "f00d"})
    details.show_scores(_scores(), "merged (current plan)", "digits")
    assert details.export_button.isEnabled()
    labels = [e[0] for e in details._export_entries()]
    assert labels == ["Both plots as PNG\u2026", "Both plots as SVG\u2026",
                      "Per-class accuracy as PNG\u2026", "Per-class accuracy as SVG\u2026",
                      "Confusion matrix as PNG\u2026", "Confusion matrix as SVG\u2026",
                      "Per-class accuracy as CSV\u2026", "Confusion matrix as CSV\u2026"]

    png = details.export_figure(tmp_path / "both.png", "all", dpi=300)
    image = QImage(str(png))
    assert round(image.dotsPerMeterX() * 0.0254) == 300
    assert image.width() == pytest.approx(2 * 4.2 * 300, abs=2)  # two print-size plots
    corner = image.pixelColor(2, image.height() - 2)
    assert (corner.red(), corner.green(), corner.blue()) == (255, 255, 255)  # print: white
    one = details.export_figure(tmp_path / "conf.png", "confusion", dpi=150)
    assert QImage(str(one)).width() == pytest.approx(4.2 * 150, abs=2)
    svg = details.export_figure(tmp_path / "both.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "merged (current plan) on digits" in svg  # titled
    assert "per-class accuracy" in svg and "predicted class" in svg  # plot titles, axis labels
    assert details.scores is not None  # the plots on screen stay (a copy was exported)
    assert details.bar_plot in details.grid.plots and details.bar_plot.scene() is not None

    def read(path):
        lines = path.read_text(encoding="utf-8").splitlines()
        return ([line for line in lines if line.startswith("# ")],
                list(csv.reader(line for line in lines if not line.startswith("#"))))

    meta, rows = read(details.export_csv(tmp_path / "acc.csv", "accuracy"))
    assert meta[:2] == ["# model: merged (current plan)", "# dataset: digits"]
    assert "# model_sha256: ab12" in meta and "# dataset_fingerprint: f00d" in meta
    assert "# samples: 10" in meta and meta[-1].startswith("# mal_desktop: ")
    assert rows[0] == ["class", "name", "samples", "correct", "accuracy"]
    assert rows[1:] == [["0", "zero", "3", "2", repr(2 / 3)], ["1", "one", "2", "2", "1.0"],
                        ["2", "two", "5", "4", "0.8"]]
    meta, rows = read(details.export_csv(tmp_path / "conf.csv", "confusion"))
    assert rows[0] == ["true_class", "true_name", "predicted_class", "predicted_name", "count"]
    assert len(rows) == 1 + 9 and ["2", "two", "0", "zero", "1"] in rows
    assert sum(int(r[4]) for r in rows[1:]) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cell_details_of_many_classes_tick_indices_not_names(qtbot) -> None:
    """A language model's 512 token classes: naming every tick drew hundreds of token strings
    on top of each other; the axes then tick class indices, and say so."""
    from mal_desktop.core.evaluate.metric_registry import SampleScores
    from mal_desktop.gui.plots.cell_details import MAX_NAMED_TICKS, CellDetails

    details = CellDetails()
    qtbot.addWidget(details)
    details.resize(700, 400)
    n = 512
    labels = np.arange(2 * n, dtype=np.int64) % n
    preds = (labels * 7) % n
    details.show_scores(SampleScores(labels, preds, preds == labels, np.full(2 * n, 0.5),
                                     np.full(2 * n, 0.9), np.array([f"tok{i}" for i in labels]),
                                     n), "lm", "python-code")
    for plot, side in ((details.bar_plot, "bottom"), (details.conf_plot, "bottom"),
                       (details.conf_plot, "left")):
        axis = plot.getAxis(side)
        assert axis._tickLevels is None and "index" in axis.labelText
    details.show_scores(_scores(), "mlp", "digits")  # few classes: named again
    levels = details.bar_plot.getAxis("bottom")._tickLevels
    assert levels is not None and [v for v, _ in levels[0]] == [0, 1, 2]
    assert details.bar_plot.getAxis("bottom").labelText == "true class"
    assert 3 <= MAX_NAMED_TICKS < n


def test_a_case_counted_in_heads_says_what_the_plots_count(diag: DiagnosticsPanel) -> None:
    """A key projection of 2 -> 4 heads of 16 dims: the width case counts heads (4 <- 2), the
    matrix and bars dims (64 <- 32). The header says so instead of showing both unlabelled."""
    q = np.zeros((64, 32), np.float32)
    q[np.arange(32), np.arange(32)] = 1
    case = ("out: base wider 4 <- 2 heads of 16 (zero-pad 2); in: base wider 128 <- 64 "
            "(zero-pad 64)")
    d = StepDiagnostics(index=0, label="z:k_proj -> k_proj", align="chain", case_text=case,
                        out=SideReport(64, 32, "wider", 32, 32, 0),
                        inp=SideReport(128, 64, "wider", 64, 64, 0),
                        objective=(1.0,), costs=np.ones(32), out_matrix=q, in_matrix=None)
    diag.show_step(d)
    header = diag._header.text()
    assert "out: the case counts 4\u21902 heads of 16 dims each" in header
    assert "64\u219032" in header and "in: the case counts" not in header
    diag.show_step(_diagnostics())  # a case in rows already: no note
    assert "the case counts" not in diag._header.text()


def test_query_heads_reordered_in_their_groups_are_reported(diag: DiagnosticsPanel,
                                                            tmp_path) -> None:
    """A grouped-query query projection: the matrix of dims cannot show that query heads were
    reordered inside their groups, so the header, its tooltip and the units CSV say it."""
    case = "out: equal 2 head groups of 16; in: equal 16"
    d = StepDiagnostics(index=0, label="z:q_proj -> q_proj", align="chain", case_text=case,
                        out=SideReport(8, 8, "equal", 8, 0, 0, groups=2, groups_reordered=1),
                        inp=SideReport(16, 16, "equal", 16, 0, 0),
                        objective=(1.0,), costs=np.ones(8), out_matrix=np.eye(8, dtype=np.float32),
                        in_matrix=None)
    diag.show_step(d)
    said = "query heads reordered inside 1 of 2 key/value head groups"
    assert f"out: {said}" in diag._header.text() and said in diag._header.toolTip()
    assert data_lines(diag.export_csv(tmp_path / "u.csv", "units"))[1] == "out,8,8,equal,8,0,0,2,1"
    diag.show_step(_diagnostics())  # no grouped-query side: nothing said
    assert "query heads" not in diag._header.text()


def test_a_step_without_alignment_says_what_its_aligned_line_is(curve: CurvePlot) -> None:
    """A step set to "none" merges naively; its curve still draws chain alignment beside it,
    which the diagnostics (no alignment ran) would otherwise contradict."""
    import dataclasses

    r = _result()
    curve.set_result(r)
    assert "without alignment" not in curve.summary_text()
    curve.set_result(dataclasses.replace(r, alignment={"align": "chain", "requested": "chain",
                                                       "step_align": "none"}))
    assert ("This step merges without alignment (the naive line); the aligned line shows "
            "chain alignment for comparison.") in curve.summary_text()


def test_plot_pages_keep_every_tab_in_sight_when_narrow(qtbot) -> None:
    """The drill-down's pages read 'per-class accuracy | confusi' with scroll arrows in a
    narrow panel: now every tab is in the bar, elided, with its whole name as a tooltip."""
    from mal_desktop.gui.plots.plot_grid import PlotGrid

    grid = PlotGrid(columns=2)
    qtbot.addWidget(grid)
    for name in ("per-class accuracy", "confusion matrix"):
        grid.add_plot(name)
    grid.setMinimumSize(0, 0)
    grid.resize(160, 150)  # too small for both plots at once: two pages
    grid.show()
    qtbot.waitExposed(grid)
    qtbot.waitUntil(lambda: grid.page_count == 2)
    bar = grid.pages
    assert bar.isVisible() and bar.count() == 2
    qtbot.waitUntil(lambda: bar.tabRect(1).right() < grid.width(), timeout=2000)
    assert bar.tabRect(0).right() < bar.tabRect(1).left()
    assert [bar.tabToolTip(i) for i in range(2)] == ["per-class accuracy", "confusion matrix"]


def test_text_cells_drill_down_per_document_and_images_per_class_again(qtbot, tmp_path) -> None:
    """A language model's cell drew a vocabulary-sized confusion matrix with its token 'classes'
    named after files; text is shown per document (perplexity and next-token accuracy, the
    documents down the side), and an image cell afterwards gets its classes back."""
    from mal_desktop.core.evaluate.metric_registry import SampleScores
    from mal_desktop.gui.plots.cell_details import CellDetails

    details = CellDetails()
    qtbot.addWidget(details)
    details.resize(700, 400)
    labels = np.array([5, 9, 5, 7, 300, 5], np.int64)
    preds = np.array([5, 1, 5, 2, 300, 4], np.int64)
    loss = np.array([0.1, 2.0, 0.3, 1.5, 0.2, 2.2])
    docs = np.array(["b.py", "b.py", "a.py", "a.py", "a.py", "b.py"])
    text = SampleScores(labels, preds, preds == labels, loss, np.full(6, 0.5), docs, 320)
    details.show_scores(text, "lm", "python-code", per_token=True)
    assert details.bar_plot.titleLabel.text == "perplexity"
    # the names a narrow panel's page tabs take (they read "per-class accuracy" over this)
    assert details.grid._names == ["perplexity per document", "next-token accuracy"]
    left = details.bar_plot.getAxis("left")._tickLevels
    assert [name for _, name in left[0]] == ["a.py", "b.py"]
    assert details.image.image is None and not details.count_labels  # no confusion matrix
    widths = details.doc_ppl.opts["width"]
    assert widths == pytest.approx([np.exp(loss[2:5].mean()), np.exp(loss[[0, 1, 5]].mean())])
    assert list(details.doc_bars.opts["width"]) == pytest.approx([2 / 3, 1 / 3])
    rows = details.export_csv(tmp_path / "d.csv", "documents").read_text().splitlines()
    assert rows[-2].startswith("a.py,3,") and rows[-1].startswith("b.py,3,")
    with pytest.raises(ValueError, match="of text scored per token"):
        details.export_csv(tmp_path / "c.csv", "confusion")
    details.show_scores(_scores(), "mlp", "digits")
    assert details.bar_plot.titleLabel.text == "per-class accuracy"
    assert details.grid._names == ["per-class accuracy", "confusion matrix"]
    assert details.image.image is not None and len(details.doc_ppl.opts["width"]) == 0
    assert details.bar_plot.getAxis("left")._tickLevels is None
    assert details.bar_plot.getAxis("left").labelText == "accuracy"


def test_confusion_counts_show_only_while_a_cell_holds_them(qtbot) -> None:
    """In a small drill-down the counts printed in the confusion matrix spilled over their
    neighbours ("34" across two cells); they now show only while the widest fits a cell."""
    from mal_desktop.core.evaluate.metric_registry import SampleScores
    from mal_desktop.gui.plots.cell_details import CellDetails

    n = 10
    labels = np.repeat(np.arange(n), 120)
    preds = labels.copy()
    preds[::7] = (preds[::7] + 1) % n
    details = CellDetails()
    qtbot.addWidget(details)
    details.resize(1400, 800)
    details.show()
    qtbot.waitExposed(details)
    details.show_scores(SampleScores(labels, preds, preds == labels, np.full(len(labels), 0.5),
                                     np.full(len(labels), 0.9), labels.astype(str), n),
                        "mlp", "digits")
    qtbot.waitUntil(lambda: all(label.isVisible() for label in details.count_labels))
    assert len(details.count_labels) >= n
    details.resize(420, 260)  # cells of a few pixels: the three-digit counts cannot fit
    qtbot.waitUntil(lambda: not any(label.isVisible() for label in details.count_labels))
    details.resize(1400, 800)
    qtbot.waitUntil(lambda: all(label.isVisible() for label in details.count_labels))
