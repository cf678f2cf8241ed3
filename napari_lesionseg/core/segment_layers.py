"""What the plugin shows for a prediction, as napari layer-data tuples (no napari import):
``<image> probability`` (Image), ``<image> lesions`` (Labels, editable), ``<image> fuzzy``
(Image, translucent). Also the rules for turning painted Labels into a stored label map."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .image_io import IGNORE_LABEL
from .review import settings_metadata

if TYPE_CHECKING:
    from .inference import Prediction

LESION, UNSURE = 1, IGNORE_LABEL

# Colours chosen to be seen on an orange-red fundus (layer-keyword dicts, no napari import):
# lesions saturated cyan, the complement of the fundus; "unsure" a quiet grey; the fuzzy map
# magenta fading to fully transparent where the model is sure (translucent, not additive: an
# additive cyan rendered cream-white, like a hard exudate).
LESION_RGBA = "#00e5ff"
UNSURE_RGBA = "#a0a0a0"


def lesion_style() -> dict[str, Any]:
    """Keywords of the lesions Labels layer (a fresh dict each time: napari may keep it)."""
    return {"colormap": {0: "transparent", LESION: LESION_RGBA, UNSURE: UNSURE_RGBA, None: "#ff9900"},
            "opacity": 0.75}


def fuzzy_style() -> dict[str, Any]:
    """Keywords of the fuzzy-map Image layer: full magenta from 0.5 up (where the mask is as
    likely wrong as right; the shipped map's estimates stay below about 0.65, so a 0..1 scale
    left the overlay barely visible in the step-1 screenshot)."""
    return {"colormap": {"name": "lesionseg fuzzy", "colors": [[1.0, 0.0, 0.85, 0.0], [1.0, 0.0, 0.85, 1.0]]},
            "contrast_limits": (0.0, 0.5), "opacity": 0.45, "blending": "translucent"}


def layer_names(image_name: str) -> dict[str, str]:
    return {"probability": f"{image_name} probability", "lesions": f"{image_name} lesions",
            "fuzzy": f"{image_name} fuzzy"}


def prediction_layers(image_name: str, pred: Prediction, scale: tuple[float, float] = (1.0, 1.0),
                      translate: tuple[float, float] = (0.0, 0.0)) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer-data tuples for one prediction, aligned with the source image layer."""
    names = layer_names(image_name)
    common = {"scale": scale, "translate": translate}
    meta = {"model_version": pred.model_version, "lesionseg": True,
            **settings_metadata(pred.threshold, pred.review)}
    return [
        (pred.probability, {"name": names["probability"], "colormap": "magma", "contrast_limits": (0.0, 1.0),
                            "visible": False, "metadata": meta, **common}, "image"),
        (pred.fuzzy, {"name": names["fuzzy"], **fuzzy_style(), "metadata": meta, **common}, "image"),
        (pred.mask.copy(), {"name": names["lesions"], **lesion_style(), "metadata": meta, **common}, "labels"),
    ]


def labels_to_label_map(data: NDArray) -> NDArray[np.uint8]:
    """Painted Labels data to a stored label map: 0 background, 255 unsure, any other label
    value lesion (1)."""
    arr = np.asarray(data)
    if arr.dtype == np.uint8 and (not arr.size or int(arr.max()) <= LESION):
        return arr.copy()  # a copy, never the layer's own array: napari paints it in place
    return np.where(arr == UNSURE, UNSURE, np.where(arr != 0, LESION, 0)).astype(np.uint8)


def project_image_layers(project, image_id: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The photo of ``image_id`` with its latest prediction (probability, fuzzy) and its latest
    correction (or the predicted mask) as the editable lesions layer."""
    from .image_io import read_image

    path = project.image_path(image_id)
    rgb, _ = read_image(path)
    out: list[tuple[Any, dict[str, Any], str]] = [
        (rgb, {"name": image_id, "rgb": True, "metadata": {"path": str(path)}}, "image")]
    names = layer_names(image_id)
    d = project.latest_prediction(image_id)
    meta = {"lesionseg": True, "model_version": d.name if d is not None else None,
            **(project.prediction_settings(image_id) if d is not None else {})}
    mask = project.latest_label(image_id)
    prob, fuzzy = project.prediction_map(image_id, "prob"), project.prediction_map(image_id, "fuzzy")
    if prob is not None and fuzzy is not None:
        out.append((prob, {"name": names["probability"], "colormap": "magma", "contrast_limits": (0.0, 1.0),
                           "visible": False, "metadata": meta}, "image"))
        out.append((fuzzy, {"name": names["fuzzy"], **fuzzy_style(), "metadata": meta}, "image"))
    if mask is None:
        predicted = project.prediction_map(image_id, "mask")
        mask = None if predicted is None else (predicted > 0.5).astype(np.uint8)
    if mask is not None:
        out.append((mask, {"name": names["lesions"], **lesion_style(), "metadata": meta}, "labels"))
    return out
