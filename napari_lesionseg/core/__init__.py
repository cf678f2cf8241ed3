"""Qt-free, napari-free engine: IO, preprocessing, models, inference, metrics, stores."""

from .errors import LesionsegInputError

__all__ = ["LesionsegInputError"]
