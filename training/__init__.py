"""napari-lesionseg's bundled training module (installed as ``lesionseg_training``)."""

from .train_config import TrainConfig, load_config
from .trainer import train

__all__ = ["TrainConfig", "load_config", "train"]
