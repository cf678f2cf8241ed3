"""The one error type users see for bad input."""

from __future__ import annotations

import os


class LesionsegInputError(ValueError):
    """Bad input: the message names the file and says what is wrong with it.

    Raised for unreadable, truncated, oversized or mismatched images and masks, and for
    model folders that fail validation. CLI front ends print ``str(err)`` without a traceback.
    """

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)

    def naming(self, path: str | os.PathLike[str]) -> LesionsegInputError:
        """This error, naming ``path`` when it named no file (a problem found in a photo's pixels)."""
        return self if self.path is not None else LesionsegInputError(path, self.problem)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite before any model was saved."""
