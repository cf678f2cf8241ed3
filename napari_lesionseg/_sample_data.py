"""File > Open Sample: IDRiD photographs with their ground-truth hemorrhage masks."""

from __future__ import annotations

from typing import Any

from .core.bundled import sample_paths
from .core.image_io import read_image, read_mask


def _sample(key: str) -> list[tuple[Any, dict[str, Any], str]]:
    img_path, mask_path = sample_paths(key)
    rgb, _ = read_image(img_path)
    mask = read_mask(mask_path, shape=rgb.shape[:2])
    name = img_path.stem
    return [
        (rgb, {"name": name, "rgb": True, "metadata": {"path": str(img_path)}}, "image"),
        (mask, {"name": f"{name} ground truth", "opacity": 0.5, "visible": False}, "labels"),
    ]


def idrid_04() -> list[tuple[Any, dict[str, Any], str]]:
    return _sample("idrid_04")


def idrid_16() -> list[tuple[Any, dict[str, Any], str]]:
    return _sample("idrid_16")
