"""pyqtgraph styling from the palette's colours (gui/palette.py holds the colours themselves)."""

from __future__ import annotations

from typing import Any

from ..palette import PlotColors


def color_axes(plots: Any, colors: PlotColors) -> None:
    """Give the left and bottom axes of ``plots`` the palette's muted line and text colours."""
    import pyqtgraph as pg

    for plot in plots:
        for side in ("left", "bottom"):
            axis = plot.getAxis(side)
            axis.setPen(pg.mkPen(colors.muted))
            axis.setTextPen(pg.mkPen(colors.foreground))
