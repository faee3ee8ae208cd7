"""``python -m mal_desktop.cli``: the `mal` command."""

import sys

from . import main

sys.exit(main())
