"""Headless engine of mal_desktop. Never imports Qt or pyqtgraph (tests/test_architecture.py)."""
