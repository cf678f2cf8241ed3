"""What the plugin shows for a prediction, as napari layer-data tuples (no napari import):
``<image> probability`` (Image), ``<image> lesions`` (Labels, editable), ``<image> fuzzy``
(Image, translucent). Also the rules for turning painted Labels into a stored label map."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .image_io import IGNORE_LABEL
from .lesion_types import HE, LESION_TYPES, LONG_NAMES, TYPE_VALUE
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
# the other lesion types, each a hue far from the fundus's and from the others' (hemorrhages cyan)
TYPE_RGBA = {"HE": LESION_RGBA, "MA": "#76ff03", "EX": "#2962ff", "SE": "#ffd600"}
DISC_RGBA = "#ffffff"
MACULA_RGBA = "#ffd600"
PAINT_ORDER = ("EX", "SE", "MA", "HE")  # where types overlap and no probability decides, the later one shows
OUTLINES = " disc and macula"  # the disc and macula outlines layer: the photo's name, then this
# the metadata key naming the project folder a layer was opened from (File > Open on a project):
# the docks take it as their project folder, so that edits made in it are kept there
OPENED_FROM = "lesionseg_project"


def lesion_style() -> dict[str, Any]:
    """Keywords of the lesions Labels layer (a fresh dict each time: napari may keep it)."""
    cmap: dict[int | None, str] = {0: "transparent", UNSURE: UNSURE_RGBA, None: "#ff9900"}
    cmap.update({TYPE_VALUE[t]: c for t, c in TYPE_RGBA.items()})
    return {"colormap": cmap, "opacity": 0.75}


def legend(types: list[str] | tuple[str, ...]) -> list[tuple[str, str, int]]:
    """``(colour, name, label value)`` per lesion type shown, then "unsure": what the dock's
    legend lists (the value is what napari's label tools paint the type with)."""
    rows = [(TYPE_RGBA[t], f"{LONG_NAMES[t]} ({t})", TYPE_VALUE[t]) for t in LESION_TYPES if t in types]
    return rows + [(UNSURE_RGBA, "unsure", UNSURE)]


def composite_mask(he_mask: NDArray, others: dict[str, NDArray] | None = None,
                   probability: Callable[[str], NDArray | None] | None = None) -> NDArray[np.uint8]:
    """One label map of every type's 0/1 mask, a value per type; ``he_mask`` alone when there
    are no other types (today's 0/1 map). Where masks overlap, the type with the highest
    probability (``probability(type)``, HE included; asked only for the types that overlap,
    so a stored map is read only when needed) takes the pixel, else the last of
    ``PAINT_ORDER``. IDRiD's annotators gave a pixel one type, but the five-output model's
    masks overlap (37 % of its microaneurysm pixels were also hemorrhage); the higher
    probability gave the annotated type more often than a fixed order (benchmarks/README.md,
    "Where lesion types overlap")."""
    lesions = {t: m for t, m in (others or {}).items() if t in TYPE_VALUE}
    if not lesions:
        return (np.asarray(he_mask) > 0).view(np.uint8).copy()
    shape = np.shape(he_mask)
    masks = {t: np.asarray(he_mask) if t == HE else lesions.get(t) for t in PAINT_ORDER}
    flat = {t: (np.asarray(m) > 0).ravel() for t, m in masks.items() if m is not None}
    where = np.flatnonzero(np.logical_or.reduce(list(flat.values())))  # the lesions: ~1 % of a photo
    on = {t: m[where] for t, m in flat.items()}
    values = np.zeros(where.size, np.uint8)
    for t, m in on.items():
        values[m] = TYPE_VALUE[t]
    several = np.flatnonzero(np.sum(list(on.values()), axis=0) > 1) if probability is not None else []
    if len(several):
        types = [t for t in on if on[t][several].any()]
        probs = {t: probability(t) for t in types}
        if all(p is not None for p in probs.values()):
            at = where[several]
            score = np.stack([np.where(on[t][several], np.asarray(probs[t]).ravel()[at], -1.0) for t in types])
            values[several] = np.array([TYPE_VALUE[t] for t in types], np.uint8)[np.argmax(score, axis=0)]
    out = np.zeros(int(np.prod(shape)), np.uint8)
    out[where] = values
    return out.reshape(shape)


def prediction_label(pred: Prediction, he_mask: NDArray | None = None) -> NDArray[np.uint8]:
    """The label map a prediction shows: hemorrhages (``he_mask``, e.g. at another threshold,
    or the prediction's) and every other lesion type it holds."""
    return composite_mask(pred.mask if he_mask is None else he_mask, {t: m.mask for t, m in pred.others.items()},
                          lambda t: pred.probability if t == HE else pred.others[t].probability)


def anatomy_layer(image_name: str, anatomy, scale: tuple[float, float] = (1.0, 1.0),
                  translate: tuple[float, float] = (0.0, 0.0)) -> tuple[Any, dict[str, Any], str] | None:
    """A Shapes layer-data tuple outlining the optic disc (white) and the macula (yellow, a
    thinner line: 1 disc diameter around the fovea), or None without a disc."""
    if anatomy.disc_centre is None or not anatomy.disc_diameter:
        return None
    r = anatomy.disc_diameter / 2.0
    shapes = [_ellipse(anatomy.disc_centre, r)]
    colours, widths = [DISC_RGBA], [max(2.0, r / 25)]
    if anatomy.fovea is not None:
        shapes.append(_ellipse(anatomy.fovea, 2.0 * r))
        colours.append(MACULA_RGBA)
        widths.append(max(2.0, r / 40))
    return (shapes, {"name": image_name + OUTLINES, "shape_type": "ellipse", "edge_color": colours,
                     "face_color": "transparent", "edge_width": widths, "scale": scale, "translate": translate,
                     "metadata": {"lesionseg": True, "fovea_method": anatomy.fovea_method,
                                  "note": anatomy.note, "disc_source": anatomy.disc_source}}, "shapes")


def _ellipse(centre: tuple[float, float], radius: float) -> NDArray[np.float64]:
    cy, cx = centre
    return np.array([[cy - radius, cx - radius], [cy - radius, cx + radius], [cy + radius, cx + radius],
                     [cy + radius, cx - radius]])


def fuzzy_style() -> dict[str, Any]:
    """Keywords of the fuzzy-map Image layer: full magenta from 0.5 up (where the mask is as
    likely wrong as right; the shipped map's estimates stay below about 0.65, so a 0..1 scale
    left the overlay barely visible in the step-1 screenshot)."""
    return {"colormap": {"name": "lesionseg fuzzy", "colors": [[1.0, 0.0, 0.85, 0.0], [1.0, 0.0, 0.85, 1.0]]},
            "contrast_limits": (0.0, 0.5), "opacity": 0.45, "blending": "translucent"}


def layer_names(image_name: str) -> dict[str, str]:
    return {"probability": f"{image_name} probability", "lesions": f"{image_name} lesions",
            "fuzzy": f"{image_name} fuzzy"}


def all_layer_names(image_name: str) -> list[str]:
    """Every layer the docks make for a photo: its results, the disc and macula outlines (a
    model with an optic-disc output) and Review's frame of the current region."""
    return [*layer_names(image_name).values(), image_name + OUTLINES, f"{image_name} current region"]


def prediction_layers(image_name: str, pred: Prediction, scale: tuple[float, float] = (1.0, 1.0),
                      translate: tuple[float, float] = (0.0, 0.0)) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer-data tuples for one prediction, aligned with the source image layer."""
    names = layer_names(image_name)
    common = {"scale": scale, "translate": translate}
    meta = {"model_version": pred.model_version, "lesionseg": True,
            **settings_metadata(pred.threshold, pred.review)}
    out = [
        (pred.probability, {"name": names["probability"], "colormap": "magma", "contrast_limits": (0.0, 1.0),
                            "visible": False, "metadata": meta, **common}, "image"),
        (pred.fuzzy, {"name": names["fuzzy"], **fuzzy_style(), "metadata": meta, **common}, "image"),
        (prediction_label(pred), {"name": names["lesions"], **lesion_style(), "metadata": meta, **common}, "labels"),
    ]
    outline = anatomy_layer(image_name, pred.anatomy, scale, translate)
    return out + ([outline] if outline is not None else [])


def labels_to_label_map(data: NDArray, types: list[str] | tuple[str, ...] = (HE,)) -> NDArray[np.uint8]:
    """Painted Labels data to a stored label map: 0 background, 255 unsure, the value of each
    of ``types`` kept (1 HE, 2 MA, 3 EX, 4 SE), any other label value a hemorrhage (1)."""
    arr = np.asarray(data)
    top = max(TYPE_VALUE[t] for t in types)
    if arr.dtype == np.uint8 and (not arr.size or int(arr.max()) <= top) and top == len(types):
        return arr.copy()  # a copy, never the layer's own array: napari paints it in place
    kept = [0, UNSURE] + [TYPE_VALUE[t] for t in types]
    if arr.dtype == np.uint8:  # one table lookup (32 ms for an IDRiD photo; isin and where took 120-170)
        table = np.full(256, LESION, np.uint8)
        table[kept] = kept
        return table[arr]
    return np.where(np.isin(arr, kept), arr, LESION).astype(np.uint8)


def project_image_layers(project, image_id: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The photo of ``image_id`` with its latest prediction (probability, fuzzy) and its latest
    correction (or the predicted mask; or the draft of hand edits made on it and never saved,
    its metadata's ``restored_draft`` saying when they were kept, ``restored_what`` what: a draft
    of Review decisions alone keeps the correction) as the editable lesions layer, and the disc and macula
    outlines when the prediction placed them (a model with an optic-disc output), as a run
    shows them (a photo opened from the project had none)."""
    from .anatomy import Anatomy
    from .image_io import read_image

    path = project.image_path(image_id)
    rgb, _ = read_image(path)
    out: list[tuple[Any, dict[str, Any], str]] = [
        (rgb, {"name": image_id, "rgb": True, "metadata": {"path": str(path)}}, "image")]
    names = layer_names(image_id)
    d = project.latest_prediction(image_id)
    meta = {"lesionseg": True, "model_version": d.name if d is not None else None,
            **(project.prediction_settings(image_id) if d is not None else {})}
    latest = project.latest_with_label(image_id)
    mask = None if latest is None else latest[1]
    # hand edits napari closed (or crashed) before they were saved
    draft = project.current_draft(image_id, None if latest is None else latest[0].version)
    lesions_meta = dict(meta)
    if draft is not None and draft.label.shape == rgb.shape[:2]:
        if draft.edited:
            mask = draft.label
        lesions_meta["restored_draft"], lesions_meta["restored_what"] = draft.kept_at, draft.what
    prob, fuzzy = project.prediction_map(image_id, "prob"), project.prediction_map(image_id, "fuzzy")
    if prob is not None and fuzzy is not None:
        out.append((prob, {"name": names["probability"], "colormap": "magma", "contrast_limits": (0.0, 1.0),
                           "visible": False, "metadata": meta}, "image"))
        out.append((fuzzy, {"name": names["fuzzy"], **fuzzy_style(), "metadata": meta}, "image"))
    if mask is None:
        mask = stored_label_map(project, image_id, prob)
    outline = anatomy_layer(image_id, Anatomy.from_dict(meta.get("anatomy"))) if d is not None else None
    if outline is not None:
        out.append(outline)
    if mask is not None:  # last: the layer napari selects, the one painting goes to
        out.append((mask, {"name": names["lesions"], **lesion_style(), "metadata": lesions_meta}, "labels"))
    return out


def stored_label_map(project, image_id: str, prob: NDArray | None = None) -> NDArray[np.uint8] | None:
    """The label map of the image's latest stored prediction (None: none stored): its
    hemorrhage mask and every other type's, overlaps settled by probability as a run's are
    (``prob``: the stored hemorrhage probability, when already read)."""
    predicted = project.prediction_map(image_id, "mask")
    if predicted is None:
        return None
    others = {t: m for t, (_p, m, _thr) in project.prediction_types(image_id, probabilities=False).items()}

    def probability(t: str) -> NDArray | None:
        if t == HE:
            return prob if prob is not None else project.prediction_map(image_id, "prob")
        return project.prediction_map(image_id, f"{t}_prob")

    return composite_mask(predicted > 0.5, others, probability)
