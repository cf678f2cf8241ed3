"""napari-lesionseg's bundled training module (installed as ``lesionseg_training``).

``TrainConfig``, ``load_config`` and ``train`` are imported on first use, so that running one of
the package's tools (``python -m lesionseg_training.replay`` and the like) does not import it
twice (once as a module of the package, once as ``__main__``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .train_config import TrainConfig, load_config
    from .trainer import train

__all__ = ["TrainConfig", "load_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "load_config"):
        from . import train_config

        return getattr(train_config, name)
    if name == "train":
        from .trainer import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
