"""Icons: the application icon (from the repository's resources/ folder) and action icons.

Action icons come from the desktop's icon theme when it has them (they then match the rest of
the desktop) and fall back to the style's built-in pixmaps otherwise (offscreen, bare X servers,
Windows without a theme).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QIcon
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


def action_icon(theme_name: str, fallback: QStyle.StandardPixmap | None = None) -> QIcon:
    """``theme_name`` from the icon theme, else the style's ``fallback`` pixmap (or no icon)."""
    if QIcon.hasThemeIcon(theme_name):
        return QIcon.fromTheme(theme_name)
    style = QApplication.style()
    if fallback is not None and style is not None:
        return style.standardIcon(fallback)
    return QIcon()
