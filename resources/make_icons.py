"""Render mal-desktop.svg to the PNG sizes the app and the desktop entry use.

Run from anywhere: ``python resources/make_icons.py`` (needs PySide6 with QtSvg;
no display: uses the offscreen platform). Re-run after editing the SVG.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

SIZES = (16, 24, 32, 48, 64, 128, 256)
HERE = Path(__file__).resolve().parent


def render(svg: Path, size: int, out: Path) -> None:
    """Draw ``svg`` into a transparent ``size`` x ``size`` PNG at ``out``."""
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    if not image.save(str(out), "PNG"):
        raise SystemExit(f"{out}: cannot write")


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    svg = HERE / "mal-desktop.svg"
    for size in SIZES:
        out = HERE / f"mal-desktop-{size}.png"
        render(svg, size, out)
        print(f"wrote {out.name}")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
