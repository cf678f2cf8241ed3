"""Where the files shipped inside the package live: the default model and the sample data."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import LesionsegInputError

DEFAULT_MODEL_NAME = "default"
# The models that ship inside the package, by name, with what each segments (the plugin's model
# list and ``--model NAME`` on the command line).
BUNDLED_MODELS = {
    "default": "hemorrhages",
    "multi": "four lesion types + optic disc",
}


def bundled_model_dir(name: str) -> Path:
    return Path(str(resources.files("napari_lesionseg"))) / "models" / name


def default_model_dir() -> Path:
    """The model folder the plugin and CLI use when no model is named."""
    return bundled_model_dir(DEFAULT_MODEL_NAME)


def bundled_models() -> dict[str, Path]:
    """The bundled models present in this installation, by name (default first)."""
    return {name: bundled_model_dir(name) for name in BUNDLED_MODELS
            if (bundled_model_dir(name) / "config.json").is_file()}


def resolve_model(folder_or_name: str | os.PathLike[str] | None) -> Path:
    """A model folder from what a user typed: a folder, a bundled model's name, or None (the
    default). A name that is neither says which bundled models there are."""
    if folder_or_name is None:
        return default_model_dir()
    path = Path(folder_or_name)
    bundled = bundled_models()
    if path.exists():
        if str(folder_or_name) in bundled and not (path / "config.json").is_file():  # which was meant? say both
            raise LesionsegInputError(path, f"a folder here named like the bundled model '{folder_or_name}' holds no "
                                            "model (no config.json), and a folder given wins over a bundled name: "
                                            "run from another folder to use the bundled one, or rename this one")
        return path
    if str(folder_or_name) in bundled:
        return bundled[str(folder_or_name)]
    names = ", ".join(bundled)
    raise LesionsegInputError(path, f"model folder does not exist, nor is it a bundled model ({names})")


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
