"""Export plots as publication figures (PNG at a chosen DPI, SVG) and their data as CSV.

A figure is not a screenshot: :func:`export_figure` lays the plots out in a fixed-size figure
(inches, so the text keeps its size relative to the page whatever the screen), with a title,
axis labels and the light, print-friendly colours of :func:`~mal_desktop.gui.palette.
print_colors`, whatever the theme on screen. Panels build a second, off-screen copy of
themselves in those colours and hand its plots here. PNG files record their DPI; SVG is vector.
CSV files start with a block of ``# key: value`` provenance lines (models, step, data set,
alignment, mal_desktop version) before the header row, so a number can be traced to its run.
All files are written atomically (a reader never sees half a file).

``ExportButton`` is the "Export" tool button each plot panel shows; its entries are (label,
kind, default name, writer) tuples, and its menu offers the PNG resolution.
"""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401 - registers ImageExporter under pg.exporters
from PySide6.QtCore import QRectF, QSettings
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon
from PySide6.QtWidgets import QFileDialog, QMenu, QStyle, QToolButton, QWidget

from ...core.io.atomic import atomic_write, atomic_write_text

Cell = float | int | str | None
DPI_CHOICES = (150, 300, 600)
DEFAULT_DPI = 300
PANEL_INCHES = (4.2, 3.0)  # one plot of a figure: a column of a two-column paper, roughly
_LOGICAL_DPI = 96.0  # the figure is laid out at this many pixels per inch, then rendered at dpi
_DPI_KEY = "export/dpi"
_LAST_DIR_KEY = "export/last_dir"


def export_png(target: QWidget | pg.GraphicsItem, path: str | Path,
               background: str | QColor | None = None, scale: float = 2.0) -> Path:
    """Render ``target`` as shown to a PNG file at ``path`` (atomic); returns the path.

    A quick picture of the screen; :func:`export_figure` makes the print version. Parameters:
    target - a widget (grabbed) or a pyqtgraph item; background - fill colour for item exports;
    scale - resolution factor for item exports. Raises OSError when it cannot be written.
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        if isinstance(target, QWidget):
            if not target.isVisible() and target.size().isEmpty():
                target.resize(800, 500)
            if not target.grab().save(str(tmp), "PNG"):
                raise OSError(f"{path}: cannot write the image")
            return
        exporter = pg.exporters.ImageExporter(target)
        exporter.parameters()["width"] = max(1, int(target.boundingRect().width() * scale))
        if background is not None:
            exporter.parameters()["background"] = QColor(background)
        exporter.export(str(tmp))
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"{path}: cannot write the image")

    return atomic_write(path, write)


def export_figure(plots: Sequence[pg.PlotItem], path: str | Path, title: str,
                  dpi: int = DEFAULT_DPI, columns: int = 2,
                  panel_inches: tuple[float, float] = PANEL_INCHES, legend: str = "") -> Path:
    """Lay ``plots`` out as a titled figure and write it to ``path`` (.png or .svg, atomic).

    The plots are moved into the figure (pass the plots of an off-screen copy, never those on
    screen). Parameters: title - the figure's title (plain text); dpi - PNG resolution (the
    figure is ``panel_inches`` per plot, so 300 dpi gives about 1260 x 900 pixels per plot);
    columns - the most plots side by side; legend - a line of rich text under the title (kept
    out of the plots, where it would cover data). Returns the path; raises OSError when it cannot be
    written and ValueError for a suffix other than .png or .svg.
    """
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".png", ".svg"):
        raise ValueError(f"{path}: figures are saved as .png or .svg")
    n = max(1, len(plots))
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig = pg.GraphicsLayoutWidget()
    fig.setBackground("#ffffff")
    fig.addLabel(f"<b>{html.escape(title)}</b>", row=0, col=0, colspan=cols, size="11pt",
                 color="#000000")
    top = 1
    if legend:
        fig.addLabel(legend.replace("(drag)", ""), row=1, col=0, colspan=cols, size="8pt",
                     color="#000000")
        top = 2
    for k, plot in enumerate(plots):
        owner = plot.parentItem()
        if isinstance(owner, pg.GraphicsLayout):  # the off-screen copy's grid lets it go
            owner.removeItem(plot)
        fig.addItem(plot, row=top + k // cols, col=k % cols)
    width = panel_inches[0] * cols * _LOGICAL_DPI
    height = (panel_inches[1] * rows + 0.35 + (0.25 if legend else 0.0)) * _LOGICAL_DPI
    fig.resize(int(width), int(height))
    fig.ci.setGeometry(QRectF(0, 0, width, height))
    fig.ci.layout.activate()

    def write(tmp: Path) -> None:
        if kind == ".svg":
            _write_svg(fig, QRectF(0, 0, width, height), tmp, title)
        else:
            exporter = pg.exporters.ImageExporter(fig.ci)
            exporter.parameters()["width"] = int(round(width / _LOGICAL_DPI * dpi))
            exporter.parameters()["background"] = QColor("#ffffff")
            image = exporter.export(toBytes=True)
            per_metre = int(round(dpi / 0.0254))
            image.setDotsPerMeterX(per_metre)
            image.setDotsPerMeterY(per_metre)
            if not image.save(str(tmp), "PNG"):
                raise OSError(f"{path}: cannot write the image")
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"{path}: cannot write the figure")

    try:
        return atomic_write(path, write)
    finally:
        fig.deleteLater()


def _write_svg(fig: pg.GraphicsLayoutWidget, rect: QRectF, tmp: Path, title: str) -> None:
    """Render the figure's scene as SVG with Qt's generator (pyqtgraph's SVG exporter cannot
    parse the paths this Qt writes)."""
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    generator = QSvgGenerator()
    generator.setFileName(str(tmp))
    generator.setSize(QSize(int(rect.width()), int(rect.height())))
    generator.setViewBox(rect)
    generator.setResolution(int(_LOGICAL_DPI))
    generator.setTitle(title)
    generator.setDescription("Exported by MAL Desktop")
    painter = QPainter(generator)
    try:
        painter.fillRect(rect, QColor("#ffffff"))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        fig.scene().render(painter, rect, fig.ci.sceneBoundingRect())
    finally:
        painter.end()


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # round-trips exactly
    return str(value)


def provenance_lines(provenance: Mapping[str, object] | None) -> str:
    """The ``# key: value`` block (with the mal_desktop version) that starts an exported CSV."""
    from ... import __version__

    items = {**(provenance or {}), "mal_desktop": __version__}
    lines = []
    for key, value in items.items():
        text = " ".join(str(value).split())  # one line per entry, whatever the value holds
        lines.append(f"# {key}: {text}\n")
    return "".join(lines)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Cell]],
             provenance: Mapping[str, object] | None = None) -> str:
    """CSV text (RFC 4180, '\\n' line ends) with a header row; floats round-trip exactly.

    ``provenance``: written first as ``# key: value`` comment lines (None: no block); readers
    skip them with ``comment="#"`` (pandas) or by dropping lines that start with '#'.
    """
    buf = io.StringIO()
    if provenance is not None:
        buf.write(provenance_lines(provenance))
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def export_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Cell]],
               provenance: Mapping[str, object] | None = None) -> Path:
    """Write a CSV file atomically (see :func:`csv_text`); returns the path. Raises OSError."""
    return atomic_write_text(path, csv_text(header, rows, provenance))


ExportEntry = tuple[str, str, str, Callable[[Path], object]]  # label, kind, name, writer

_FILTERS = {"png": "PNG image (*.png)", "svg": "SVG vector image (*.svg)",
            "csv": "CSV table (*.csv)"}


def export_dpi() -> int:
    """The PNG resolution the user chose (default 300)."""
    try:
        dpi = int(QSettings().value(_DPI_KEY, DEFAULT_DPI))
    except (TypeError, ValueError):
        return DEFAULT_DPI
    return dpi if dpi in DPI_CHOICES else DEFAULT_DPI


def figure_entries(name: str, what: str, writer: Callable[[Path, int], object]
                   ) -> list[ExportEntry]:
    """PNG and SVG entries for one figure: ``writer(path, dpi)`` writes either."""
    return [(f"{what} as PNG\u2026", "png", f"{name}.png", lambda p: writer(p, export_dpi())),
            (f"{what} as SVG\u2026", "svg", f"{name}.svg", lambda p: writer(p, export_dpi()))]


def ask_save_path(parent: QWidget | None, title: str, kind: str, default_name: str) -> Path | None:
    """Ask where to save (remembering the last folder); None when the user cancels."""
    settings = QSettings()
    folder = str(settings.value(_LAST_DIR_KEY, str(Path.home())))
    chosen, _ = QFileDialog.getSaveFileName(parent, title, str(Path(folder) / default_name),
                                            _FILTERS[kind])
    if not chosen:
        return None
    path = Path(chosen)
    if path.suffix.lower() != f".{kind}":
        path = path.with_name(path.name + f".{kind}")
    settings.setValue(_LAST_DIR_KEY, str(path.parent))
    return path


class ExportButton(QToolButton):
    """A tool button "Export" whose menu offers the panel's figures and data, and the PNG DPI.

    ``entries()`` is called each time the menu opens, so entries can depend on what is shown.
    Errors while writing reach the user through gui.log.report_error (never silent).
    """

    def __init__(self, entries: Callable[[], list[ExportEntry]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries = entries
        self.setText("Export")
        self.setToolTip("Save a plot as a figure (PNG at the chosen resolution, or SVG) or its "
                        "data as CSV")
        self.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogSaveButton))
        self.setToolButtonStyle(pg.QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setAutoRaise(True)
        menu = QMenu(self)
        menu.aboutToShow.connect(self._fill)
        menu.setToolTipsVisible(True)
        self.setMenu(menu)

    def _fill(self) -> None:
        menu = self.menu()
        menu.clear()
        for label, kind, name, writer in self._entries():
            action = QAction(QIcon(), label, menu)
            action.triggered.connect(
                lambda _=False, k=kind, n=name, w=writer, t=label: self._run(t, k, n, w))
            menu.addAction(action)
        menu.addSeparator()
        dpi_menu = menu.addMenu("PNG Resolution")
        group = QActionGroup(dpi_menu)
        current = export_dpi()
        for dpi in DPI_CHOICES:
            action = dpi_menu.addAction(f"{dpi} dpi" + (" (print)" if dpi == 300 else ""))
            action.setCheckable(True)
            action.setChecked(dpi == current)
            group.addAction(action)
            action.triggered.connect(lambda _=False, d=dpi: QSettings().setValue(_DPI_KEY, d))

    def _run(self, title: str, kind: str, name: str, writer: Callable[[Path], object]) -> None:
        path = ask_save_path(self.window(), title.rstrip("\u2026."), kind, name)
        if path is None:
            return
        try:
            writer(path)
        except (OSError, ValueError) as exc:
            from ..log import report_error

            report_error(f"{path}: cannot save ({getattr(exc, 'strerror', None) or exc})",
                         parent=self.window())
