"""Errors the user sees. Every message names the file or item and the problem in one line."""

from __future__ import annotations

from pathlib import Path


class MalError(Exception):
    """Base of all errors mal_desktop reports to a user (CLI one-liner, GUI message box)."""


class ModelFileError(MalError):
    """A model file cannot be read: missing, corrupt, truncated, unsafe or of an unknown form."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class PlanError(MalError):
    """An assembly plan cannot run: unknown layer, incompatible shapes, bad lambda, ..."""


class DatasetError(MalError):
    """A dataset cannot be loaded or does not fit the model."""


class AlignmentError(MalError):
    """Two layers cannot be aligned (e.g. fixed axes of different sizes)."""


class MalWarning(UserWarning):
    """Our own warnings: the work goes on, but a result may mislead (e.g. a model whose outputs
    are probabilities, so its loss is wrong; see ``evaluate.evaluator.warn_if_probabilities``).
    Tests turn them into errors (pyproject's filterwarnings), so no test passes while warning."""
