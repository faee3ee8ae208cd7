"""Architecture registry: the families mal_desktop can rebuild from a (family, config) pair.

The lowest layer of the core above errors/progress: model files (``io``) rebuild saved models
from it, the demo-zoo builder trains its members from it, and nothing here imports either.

Plug-in API: ``from mal_desktop.core.arch import register_family`` (a new architecture family;
its saved models rebuild from their metadata) and ``build_model``, ``full_config``.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

__all__ = ["Family", "build_model", "full_config", "register_family"]

# Imported on first use, like the other plug-in packages (see core/lazy.py).
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "families"))

if TYPE_CHECKING:  # type checkers and IDEs do not run __getattr__
    from .families import Family, build_model, full_config, register_family
