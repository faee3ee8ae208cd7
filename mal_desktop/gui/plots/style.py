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


def show_tick_values(plot: Any, shown: bool) -> None:
    """Show or hide the tick labels of ``plot``'s left and bottom axes (hidden for an empty
    plot: without data, auto ticks on a squeezed axis only stack on each other)."""
    for side in ("left", "bottom"):
        plot.getAxis(side).setStyle(showValues=shown)
