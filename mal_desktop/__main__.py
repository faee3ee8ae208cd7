"""``python -m mal_desktop [FILE...] [--demo]``: start the desktop application."""

from __future__ import annotations

import sys

from mal_desktop.gui.app import main

if __name__ == "__main__":
    sys.exit(main())
