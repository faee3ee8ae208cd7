"""Live pyqtgraph plots: interpolation curves, alignment diagnostics, export."""
