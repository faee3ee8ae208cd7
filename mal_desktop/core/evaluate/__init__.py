"""Datasets, evaluation, interpolation curves and the MAL metrics."""
