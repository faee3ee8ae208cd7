"""Light and dark themes that follow the system colour scheme, and colours for plots.

:class:`ThemeController` applies a palette to the application for a mode ("system", "light",
"dark"); in "system" mode it follows ``QStyleHints.colorScheme`` and switches live when the
desktop does. Widgets receive ``QEvent.PaletteChange`` when the palette changes; plots re-read
:func:`plot_colors` then (or listen to :attr:`ThemeController.changed`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

_dark = False  # the scheme currently applied (read by plot_colors)


@dataclass(frozen=True)
class PlotColors:
    """Colours (``#rrggbb``) for plots in the current theme.

    Series colours come from the Okabe-Ito palette, which stays distinguishable for the common
    forms of colour blindness, in a lighter variant on dark backgrounds.
    """

    background: str
    foreground: str
    grid: str
    naive: str
    aligned: str
    base: str
    lambda_line: str
    highlight: str
    matrix_on: str
    matrix_off: str


_LIGHT_PLOT = PlotColors(background="#ffffff", foreground="#202124", grid="#d0d4da",
                         naive="#d55e00", aligned="#0072b2", base="#5f6368",
                         lambda_line="#cc79a7", highlight="#009e73", matrix_on="#0072b2",
                         matrix_off="#f1f3f4")
_DARK_PLOT = PlotColors(background="#1e1f22", foreground="#dfe1e5", grid="#43454a",
                        naive="#f0a35e", aligned="#56b4e9", base="#9aa0a6",
                        lambda_line="#e69fcb", highlight="#3ddc97", matrix_on="#56b4e9",
                        matrix_off="#2b2d30")


def is_dark() -> bool:
    """True when the dark palette is applied."""
    return _dark


def plot_colors(dark: bool | None = None) -> PlotColors:
    """Plot colours for the current theme (or for ``dark`` when given)."""
    return _DARK_PLOT if (_dark if dark is None else dark) else _LIGHT_PLOT


def system_prefers_dark() -> bool:
    """What the desktop asks for (``QStyleHints.colorScheme``); light when it does not say."""
    app = QGuiApplication.instance()
    if app is None:
        return False
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def dark_palette() -> QPalette:
    """A calm dark palette (neutral greys, a blue accent)."""
    p = QPalette()
    window, base, alt = QColor("#2b2d30"), QColor("#1e1f22"), QColor("#26282b")
    text = QColor("#dfe1e5")
    button, accent, dim = QColor("#3c3f41"), QColor("#3574f0"), QColor("#6f737a")
    roles = {
        QPalette.ColorRole.Window: window, QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base, QPalette.ColorRole.AlternateBase: alt,
        QPalette.ColorRole.ToolTipBase: button, QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: dim, QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: button, QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor("#ff6b6b"),
        QPalette.ColorRole.Link: QColor("#589df6"),
        QPalette.ColorRole.LinkVisited: QColor("#b48ef0"), QPalette.ColorRole.Highlight: accent,
        QPalette.ColorRole.HighlightedText: QColor("#ffffff"),
        QPalette.ColorRole.Light: QColor("#4a4d50"), QPalette.ColorRole.Midlight: QColor("#3f4245"),
        QPalette.ColorRole.Mid: QColor("#323437"), QPalette.ColorRole.Dark: QColor("#1b1c1e"),
        QPalette.ColorRole.Shadow: QColor("#000000"),
    }
    for role, colour in roles.items():
        p.setColor(QPalette.ColorGroup.All, role, colour)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText,
                 QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, dim)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Highlight, QColor("#4a4d50"))
    p.setColor(QPalette.ColorGroup.Inactive, QPalette.ColorRole.Highlight, QColor("#2e436e"))
    return p


def light_palette() -> QPalette:
    """The style's standard light palette with our accent colour."""
    style = QApplication.style()
    p = QPalette(style.standardPalette()) if style is not None else QPalette()
    p.setColor(QPalette.ColorGroup.All, QPalette.ColorRole.Highlight, QColor("#2f6fed"))
    p.setColor(QPalette.ColorGroup.All, QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    p.setColor(QPalette.ColorGroup.Inactive, QPalette.ColorRole.Highlight, QColor("#c9d7f8"))
    p.setColor(QPalette.ColorGroup.Inactive, QPalette.ColorRole.HighlightedText, QColor("#202124"))
    return p


class ThemeController(QObject):
    """Applies the theme for a mode and follows the system in "system" mode.

    Signal ``changed(bool dark)`` fires after a different palette was applied.
    """

    changed = Signal(bool)

    def __init__(self, app: QApplication, mode: str = "system") -> None:
        super().__init__(app)
        self._app = app
        self._mode = mode
        if sys.platform != "darwin":
            # Fusion draws the same everywhere and honours our palettes; macOS keeps its own.
            fusion = QStyleFactory.create("Fusion")
            if fusion is not None:
                app.setStyle(fusion)
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._on_system_changed)
        self.apply(mode)

    @property
    def mode(self) -> str:
        return self._mode

    def apply(self, mode: str) -> None:
        """Switch to ``mode`` ("system", "light" or "dark")."""
        global _dark
        if mode not in ("system", "light", "dark"):
            raise ValueError(f"unknown theme mode {mode!r}")
        self._mode = mode
        dark = system_prefers_dark() if mode == "system" else mode == "dark"
        was = _dark
        _dark = dark
        self._app.setPalette(dark_palette() if dark else light_palette())
        if dark != was:
            self.changed.emit(dark)

    @Slot(Qt.ColorScheme)
    def _on_system_changed(self, _scheme: Qt.ColorScheme) -> None:
        if self._mode == "system":
            self.apply("system")
