"""Assembly plans (document, validation) and merge methods (registry).

Plug-in API: ``from mal_desktop.core.merge import register_method, Param`` (a merge method with
its parameter schema, from which the GUI builds its form).
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

__all__ = ["MergeMethod", "Param", "get_method", "merge_tensor", "register_method"]

# Imported on first use: the GUI loads merge.plan at start-up, and methods would bring torch.
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "methods"))

if TYPE_CHECKING:  # type checkers and IDEs do not run __getattr__
    from .methods import MergeMethod, Param, get_method, merge_tensor, register_method
