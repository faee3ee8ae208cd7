"""Package-level public names served from their submodules on first use (PEP 562).

The plug-in API is imported from the packages (``from mal_desktop.core.merge import
register_method``), but a package ``__init__`` that imported its submodules would run them
whenever any one of its modules is imported: ``core.merge.plan`` (torch-free, loaded by the GUI
at start-up) would pull torch in through ``core.merge.methods``. So a package lists its public
names in ``__all__`` and gets them from here, imported when first used.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` serving ``exports`` on first access.

    package: the package's ``__name__``.
    exports: public name -> the submodule that defines it, relative (e.g. ``"methods"``).
    Returns (``__getattr__``, ``__dir__``) to assign in the package. The first imports the
    submodule, caches the value as a package attribute and returns it; an unknown name raises
    AttributeError (so ``from package import submodule`` still imports a submodule).
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
