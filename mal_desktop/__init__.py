"""mal_desktop: Model Assembly Learning on the desktop.

Load a base model and a zoo of pre-trained models, align zoo layers to base layers with
generalized permutations and merge them with a factor lambda. ``mal_desktop.core`` is the
headless engine (no Qt); ``mal_desktop.gui`` is the PySide6 application; ``mal_desktop.cli``
drives the same core jobs from a terminal.
"""

__version__ = "0.1.0"
