"""Live pyqtgraph plots: interpolation curves, alignment diagnostics, an evaluation cell's
drill-down, export."""
