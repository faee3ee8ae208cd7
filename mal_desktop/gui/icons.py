"""Icons: the application icon (from the repository's resources/ folder) and action icons.

Action icons come from the desktop's icon theme when it has them (they then match the rest of
the desktop) and fall back to the style's built-in pixmaps otherwise (offscreen, bare X servers,
Windows without a theme).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSize
from PySide6.QtGui import QColor, QIcon, QPainter
from PySide6.QtWidgets import QApplication, QStyle

ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)


def resource_dir() -> Path:
    """The repository's resources/ folder (icons, .desktop entry); also inside a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def app_icon() -> QIcon:
    """The application icon with every rendered size (empty icon when the files are missing)."""
    icon = QIcon()
    folder = resource_dir()
    for size in ICON_SIZES:
        png = folder / f"mal-desktop-{size}.png"
        if png.is_file():
            icon.addFile(str(png))
    svg = folder / "mal-desktop.svg"
    if icon.isNull() and svg.is_file():
        icon.addFile(str(svg))
    return icon


def action_icon(theme_name: str, fallback: QStyle.StandardPixmap | None = None,
                tint: QColor | None = None) -> QIcon:
    """``theme_name`` from the icon theme, else the style's ``fallback`` pixmap (or no icon).

    ``tint``: recolour a near-black fallback glyph (Fusion's play and arrow icons, invisible on
    a dark palette) keeping its shape; coloured icons (folders, disks) are left as they are.
    """
    if QIcon.hasThemeIcon(theme_name):
        return QIcon.fromTheme(theme_name)
    style = QApplication.style()
    if fallback is None or style is None:
        return QIcon()
    icon = style.standardIcon(fallback)
    if tint is None or not _is_dark_glyph(icon):
        return icon
    tinted = QIcon()
    for size in (16, 24, 32):
        for mode in (QIcon.Mode.Normal, QIcon.Mode.Disabled):
            pixmap = icon.pixmap(QSize(size, size), mode)
            if pixmap.isNull():
                continue
            painter = QPainter(pixmap)
            painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceIn)
            color = QColor(tint)
            if mode == QIcon.Mode.Disabled:
                color.setAlphaF(0.35)
            painter.fillRect(pixmap.rect(), color)
            painter.end()
            tinted.addPixmap(pixmap, mode)
    return tinted


def _is_dark_glyph(icon: QIcon) -> bool:
    """True when the icon's visible pixels are on average nearly black."""
    image = icon.pixmap(QSize(16, 16)).toImage()
    total = weight = 0.0
    for y in range(image.height()):
        for x in range(image.width()):
            c = image.pixelColor(x, y)
            a = c.alphaF()
            total += a * (0.299 * c.redF() + 0.587 * c.greenF() + 0.114 * c.blueF())
            weight += a
    return weight > 0 and total / weight < 0.3
