"""Data colours that follow the application palette (light and dark themes).

Shared by the plots and by item models that colour cells (the evaluation matrix): it sits low
in gui/, beside theme.py, and imports neither plots nor models, so an item model never depends
on the plotting package.

The shell's ``gui.theme.plot_colors()`` is the source when it exists; otherwise (and for any key
it does not provide) colours are derived from the current ``QPalette`` so plots stay readable in
either theme. Series colours are chosen to be distinguishable for common colour-vision
deficiencies (blue/orange pair from the Okabe-Ito palette).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


@dataclass(frozen=True)
class PlotColors:
    """Named colours used by every plot (hex strings, '#rrggbb')."""

    background: str
    foreground: str
    grid: str
    naive: str
    aligned: str
    accent: str  # the draggable lambda line, highlights
    good: str
    bad: str
    matched: str
    padded: str
    dropped: str
    muted: str
    matrix_off: str  # empty cells of a permutation matrix image
    dark: bool


# Our field <- the theme's field, where the theme names it differently.
_ALIASES = {"accent": "lambda_line", "matched": "matrix_on", "good": "highlight",
            "muted": "base"}


def _is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def _from_palette() -> PlotColors:
    app = QApplication.instance()
    palette = app.palette() if isinstance(app, QApplication) else QPalette()
    dark = _is_dark(palette)
    base = palette.color(QPalette.ColorRole.Base)
    text = palette.color(QPalette.ColorRole.Text)
    mix = QColor.fromRgbF(
        0.8 * base.redF() + 0.2 * text.redF(), 0.8 * base.greenF() + 0.2 * text.greenF(),
        0.8 * base.blueF() + 0.2 * text.blueF())
    muted = QColor.fromRgbF(
        0.5 * base.redF() + 0.5 * text.redF(), 0.5 * base.greenF() + 0.5 * text.greenF(),
        0.5 * base.blueF() + 0.5 * text.blueF())
    if dark:
        naive, aligned, accent = "#f0a35e", "#5fb3f0", "#d98be0"
        good, bad = "#6cc28a", "#f06c6c"
        matched, padded, dropped = "#5fb3f0", "#9aa4ad", "#f0a35e"
    else:
        naive, aligned, accent = "#d55e00", "#0072b2", "#a0389e"
        good, bad = "#1b8a4a", "#c62828"
        matched, padded, dropped = "#0072b2", "#8a939b", "#d55e00"
    return PlotColors(base.name(), text.name(), mix.name(), naive, aligned, accent, good, bad,
                      matched, padded, dropped, muted.name(), mix.name(), dark)


def _has(obj: Any, name: str) -> bool:
    return name in obj if isinstance(obj, dict) else hasattr(obj, name)


def plot_colors() -> PlotColors:
    """The colours for plots now (call again after a palette change)."""
    colors = _from_palette()
    try:
        from . import theme  # the shell's theme module (light/dark palettes)
    except ImportError:
        return colors
    provider = getattr(theme, "plot_colors", None)
    if provider is None:
        return colors
    try:
        given: Any = provider()
    except Exception:  # noqa: BLE001 - a theme problem must not break the plots
        return colors
    overrides: dict[str, Any] = {}
    for f in fields(PlotColors):
        name = f.name if _has(given, f.name) else _ALIASES.get(f.name, f.name)
        value = given.get(name) if isinstance(given, dict) else getattr(given, name, None)
        if value is None:
            continue
        if f.name == "dark":
            overrides[f.name] = bool(value)
        else:
            color = QColor(value)  # accepts QColor, '#hex' and colour names
            if color.isValid():
                overrides[f.name] = color.name()
    return PlotColors(**{**colors.__dict__, **overrides})


def print_colors() -> PlotColors:
    """Light, print-friendly colours (white paper, black text), whatever the theme on screen:
    the colours of exported figures."""
    return PlotColors(background="#ffffff", foreground="#000000", grid="#d9d9d9",
                      naive="#d55e00", aligned="#0072b2", accent="#a0389e", good="#1b8a4a",
                      bad="#c62828", matched="#0072b2", padded="#8a939b", dropped="#d55e00",
                      muted="#555555", matrix_off="#f0f0f0", dark=False)
