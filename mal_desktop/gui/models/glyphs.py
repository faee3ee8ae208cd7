"""Small drawn icons for the layer trees (kind of row, fixed axes), tinted by the palette.

Drawn with QPainter rather than shipped as files so they follow the light/dark palette and need
no resources. Icons are cached per (name, colour) and made on first use (a QApplication must
exist by then).
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPainterPath, QPen, QPixmap

_cache: dict[tuple[str, str], QIcon] = {}
_SIZE = 32  # drawn at 32 px; views scale down to their icon size


def _canvas() -> tuple[QPixmap, QPainter]:
    pm = QPixmap(_SIZE, _SIZE)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    return pm, p


def layer_icon(letter: str, color: QColor) -> QIcon:
    """A rounded square in ``color`` with a white letter: weight layers ("L" linear, "C" conv)."""
    key = (f"layer-{letter}", color.name())
    if key not in _cache:
        pm, p = _canvas()
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        p.drawRoundedRect(QRectF(3, 3, 26, 26), 6, 6)
        font = QFont()
        font.setPixelSize(18)
        font.setBold(True)
        p.setFont(font)
        p.setPen(QColor("#ffffff"))
        p.drawText(QRectF(3, 3, 26, 26), Qt.AlignmentFlag.AlignCenter, letter)
        p.end()
        _cache[key] = QIcon(pm)
    return _cache[key]


def group_icon(color: QColor) -> QIcon:
    """An outlined square: a module that only groups other modules."""
    key = ("group", color.name())
    if key not in _cache:
        pm, p = _canvas()
        p.setPen(QPen(color, 2.5))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRoundedRect(QRectF(5, 5, 22, 22), 5, 5)
        p.drawLine(QPointF(11, 13), QPointF(21, 13))
        p.drawLine(QPointF(11, 19), QPointF(21, 19))
        p.end()
        _cache[key] = QIcon(pm)
    return _cache[key]


def tensor_icon(color: QColor) -> QIcon:
    """A small filled diamond: one state tensor (weight, bias, running statistics)."""
    key = ("tensor", color.name())
    if key not in _cache:
        pm, p = _canvas()
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        path = QPainterPath()
        path.moveTo(16, 8)
        path.lineTo(24, 16)
        path.lineTo(16, 24)
        path.lineTo(8, 16)
        path.closeSubpath()
        p.drawPath(path)
        p.end()
        _cache[key] = QIcon(pm)
    return _cache[key]


def lock_icon(color: QColor) -> QIcon:
    """A padlock: the row has a fixed axis (units that must not move)."""
    key = ("lock", color.name())
    if key not in _cache:
        pm, p = _canvas()
        p.setPen(QPen(color, 3))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawArc(QRectF(10, 4, 12, 14), 0, 180 * 16)
        p.drawLine(QPointF(10, 11), QPointF(10, 15))
        p.drawLine(QPointF(22, 11), QPointF(22, 15))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        p.drawRoundedRect(QRectF(6, 14, 20, 15), 3, 3)
        p.end()
        _cache[key] = QIcon(pm)
    return _cache[key]
