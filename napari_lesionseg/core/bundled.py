"""Where the files shipped inside the package live: the default model and the sample data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_MODEL_NAME = "default"


def default_model_dir() -> Path:
    """The model folder the plugin and CLI use when no model is named."""
    return Path(str(resources.files("napari_lesionseg"))) / "models" / DEFAULT_MODEL_NAME


def sample_data_dir() -> Path:
    """The folder of bundled IDRiD sample photos and masks (installed as lesionseg_sample_data)."""
    return Path(str(resources.files("lesionseg_sample_data")))


SAMPLES = {
    "idrid_04": ("IDRiD_04.jpg", "IDRiD_04_HE.png"),
    "idrid_16": ("IDRiD_16.jpg", "IDRiD_16_HE.png"),
}


def sample_paths(key: str) -> tuple[Path, Path]:
    """``(image, mask)`` paths of one bundled sample."""
    img, mask = SAMPLES[key]
    d = sample_data_dir()
    return d / img, d / mask
