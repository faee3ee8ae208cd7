"""Export plots as PNG and their data as CSV, atomically (a reader never sees half a file).

``export_png`` renders either a whole widget (``QWidget.grab``) or one pyqtgraph plot item
(``ImageExporter``, at twice the on-screen resolution so it prints crisply). ``export_csv`` writes
the numbers behind a plot. ``ExportButton`` is the small "Export" tool button each plot panel
shows; its entries are (label, kind, default name, writer) tuples.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pyqtgraph as pg
import pyqtgraph.exporters  # noqa: F401 - registers ImageExporter under pg.exporters
from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QColor, QIcon
from PySide6.QtWidgets import QFileDialog, QMenu, QStyle, QToolButton, QWidget

from ...core.io.atomic import atomic_write, atomic_write_text

Cell = float | int | str | None


def export_png(target: QWidget | pg.GraphicsItem, path: str | Path,
               background: str | QColor | None = None, scale: float = 2.0) -> Path:
    """Render ``target`` to a PNG file at ``path`` (atomic); returns the path.

    Parameters: target - a widget (grabbed as shown) or a pyqtgraph item such as a PlotItem;
    background - fill colour for item exports (defaults to the plot's); scale - resolution
    factor for item exports. Raises OSError when the image cannot be written.
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        if isinstance(target, QWidget):
            if not target.isVisible() and target.size().isEmpty():
                target.resize(800, 500)
            pixmap = target.grab()
            if not pixmap.save(str(tmp), "PNG"):
                raise OSError(f"{path}: cannot write the image")
            return
        exporter = pg.exporters.ImageExporter(target)
        params = exporter.parameters()
        width = max(1, int(target.boundingRect().width() * scale))
        params["width"] = width  # height follows the aspect ratio
        if background is not None:
            params["background"] = QColor(background)
        exporter.export(str(tmp))
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"{path}: cannot write the image")

    return atomic_write(path, write)


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


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """CSV text (RFC 4180, '\\n' line ends) with a header row; floats round-trip exactly."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def export_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> Path:
    """Write a CSV file atomically; returns the path. Raises OSError when it cannot be written."""
    return atomic_write_text(path, csv_text(header, rows))


ExportEntry = tuple[str, str, str, Callable[[Path], object]]  # label, "png"|"csv", name, writer

_FILTERS = {"png": "PNG image (*.png)", "csv": "CSV table (*.csv)"}
_LAST_DIR_KEY = "export/last_dir"


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
    """A tool button "Export" whose menu offers the panel's PNG and CSV exports.

    ``entries()`` is called each time the menu opens, so entries can depend on what is shown.
    Errors while writing reach the user through gui.log.report_error (never silent).
    """

    def __init__(self, entries: Callable[[], list[ExportEntry]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries = entries
        self.setText("Export")
        self.setToolTip("Save a plot as PNG or its data as CSV")
        self.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogSaveButton))
        self.setToolButtonStyle(pg.QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setAutoRaise(True)
        menu = QMenu(self)
        menu.aboutToShow.connect(self._fill)
        self.setMenu(menu)

    def _fill(self) -> None:
        menu = self.menu()
        menu.clear()
        for label, kind, name, writer in self._entries():
            action = QAction(QIcon(), label, menu)
            action.triggered.connect(
                lambda _=False, k=kind, n=name, w=writer, t=label: self._run(t, k, n, w))
            menu.addAction(action)

    def _run(self, title: str, kind: str, name: str, writer: Callable[[Path], object]) -> None:
        path = ask_save_path(self.window(), title.rstrip("\u2026."), kind, name)
        if path is None:
            return
        try:
            writer(path)
        except OSError as exc:
            from ..log import report_error

            report_error(f"{path}: cannot save ({exc.strerror or exc})", parent=self.window())
