"""Evaluation toolkit: model references (files, ``zoo:NAME``, plans, in-memory models) and the
cached models x datasets matrix.

It sits above ``jobs`` and ``zoo`` because a reference may name a zoo model or an assembly plan
that is assembled on the fly; the lower ``evaluate`` package knows nothing of either.

Plug-in API: ``from mal_desktop.core.toolkit import register_model_kind, ModelRef`` (a new kind
of model reference) and what resolves and evaluates references: ``parse_model_ref``,
``eval_matrix_job``.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "register_model_kind": "model_refs", "ModelRef": "model_refs", "FileRef": "model_refs",
    "parse_model_ref": "model_refs",
    "eval_matrix_job": "matrix", "MatrixResult": "matrix", "MatrixCell": "matrix",
}
__all__ = sorted(_EXPORTS)

# Imported on first use, like the other plug-in packages (see core/lazy.py).
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # type checkers and IDEs do not run __getattr__
    from .matrix import MatrixCell, MatrixResult, eval_matrix_job
    from .model_refs import FileRef, ModelRef, parse_model_ref, register_model_kind
