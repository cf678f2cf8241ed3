"""Export: lossless masks, the lesion table as CSV (mm2 given a calibration) and a PNG
overlay, for one image or a whole project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from .anatomy import Anatomy
from .atomic import atomic_write_bytes
from .image_io import check_label_values, encode_png, read_image, write_label
from .lesion_types import HE, LESION_TYPES, TYPE_VALUE
from .lesions import Lesion, lesion_table
from .outputs import LESION_CSV_COLUMNS, write_csv, write_folder_csv
from .store import Project

LESION_RGB = np.array([255, 230, 0], np.uint8)  # outline colour
UNSURE_RGB = np.array([255, 0, 255], np.uint8)


def overlay(rgb: NDArray[np.uint8], label: NDArray, fuzzy: NDArray[np.float32] | None = None) -> NDArray[np.uint8]:
    """The photo with lesion outlines (yellow), unsure areas (magenta outline) and, if given,
    the fuzzy region tinted cyan."""
    out = rgb.copy()
    if fuzzy is not None:
        f = np.clip(fuzzy, 0, 1)[..., None] * 0.5
        out = (out * (1 - f) + np.array([0, 255, 255]) * f).astype(np.uint8)
    for value, colour in ((1, LESION_RGB), (2, LESION_RGB), (3, LESION_RGB), (4, LESION_RGB), (255, UNSURE_RGB)):
        m = np.asarray(label) == value
        if not m.any():
            continue
        edge = m & ~ndimage.binary_erosion(m, iterations=2)
        out[edge] = colour
    return out


def lesion_rows(stem: str, label: NDArray[np.uint8], prob: NDArray[np.float32] | None,
                fuzzy: NDArray[np.float32] | None, mm_per_px: float | None,
                anatomy: Anatomy | None = None) -> list[dict]:
    """The lesion table of a label map: hemorrhages (value 1), then each other lesion type it
    holds (its value, core/lesion_types.py), located by ``anatomy`` when the disc is known.
    Without the model's probability (or fuzzy map) the columns that describe it are left
    empty, never filled with a stand-in (``prob``/``fuzzy`` are the hemorrhage output's)."""
    rows = []
    prob, fuzzy = _fitting(prob, label), _fitting(fuzzy, label)
    for les in label_lesions(label, prob, fuzzy, mm_per_px, anatomy):
        row = {"image": stem, **les.row()}
        if prob is None or les.type != HE:
            row.update(mean_prob=None, max_prob=None)
        if fuzzy is None or les.type != HE:
            row.update(fuzzy_fraction=None)
        rows.append(row)
    return rows


def _fitting(m: NDArray[np.float32] | None, label: NDArray) -> NDArray[np.float32] | None:
    """``m`` when it is a map of the label map's photo (the same shape), else None."""
    return m if m is not None and m.shape == label.shape else None


def label_lesions(label: NDArray[np.uint8], prob: NDArray[np.float32] | None, fuzzy: NDArray[np.float32] | None,
                  mm_per_px: float | None, anatomy: Anatomy | None = None) -> list[Lesion]:
    """The lesions of a label map (hemorrhages, then each other type it holds), located by
    ``anatomy`` when the disc is known; without ``prob`` (the hemorrhage output's, as
    ``fuzzy``) a lesion's probability figures are its own mask's (see :func:`lesion_rows`)."""
    out: list[Lesion] = []
    for kind in LESION_TYPES:
        lesion = (label == TYPE_VALUE[kind]).astype(np.uint8)
        if kind != HE and not lesion.any():
            continue
        p = _fitting(prob, label) if kind == HE else None
        f = _fitting(fuzzy, label) if kind == HE else None
        lesions, _ = lesion_table(lesion, p if p is not None else lesion.astype(np.float32), f, mm_per_px, kind=kind)
        out += [les.located(anatomy) if anatomy is not None else les for les in lesions]
    return out


def export_image(out_dir: Path, stem: str, rgb: NDArray[np.uint8], label: NDArray,
                 prob: NDArray[np.float32] | None = None, fuzzy: NDArray[np.float32] | None = None,
                 mm_per_px: float | None = None, anatomy: Anatomy | None = None) -> tuple[list[Path], list[dict]]:
    """``<stem>_mask.png`` (0/255 lesion mask, as ``lesionseg predict`` writes, legible in any
    viewer), ``<stem>_label.png`` (the exact 0/1/255 label map, 255 = unsure, for re-import),
    ``<stem>_lesions.csv`` and ``<stem>_overlay.png``, in ``out_dir`` whatever ``stem`` holds (a
    path separator becomes ``_``: the Segment dock's stem is the photo's layer name, and a layer
    renamed "../../left eye" once wrote two folders above it). Returns the files and the lesion rows."""
    stem = stem.replace("/", "_").replace("\\", "_")
    out_dir.mkdir(parents=True, exist_ok=True)
    lab = check_label_values(label)
    rows = lesion_rows(stem, lab, prob, fuzzy, mm_per_px, anatomy)
    files = [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_label.png", out_dir / f"{stem}_lesions.csv",
             out_dir / f"{stem}_overlay.png"]
    atomic_write_bytes(files[0], encode_png((lab == 1).view(np.uint8) * np.uint8(255)))
    write_label(files[1], lab)
    write_csv(files[2], rows, LESION_CSV_COLUMNS)
    atomic_write_bytes(files[3], encode_png(overlay(rgb, lab, fuzzy)))
    return files, rows


def _stored_maps(project: Project, image_id: str, shape: tuple[int, ...]
                 ) -> tuple[NDArray[np.float32] | None, NDArray[np.float32] | None]:
    """The probability and fuzzy maps of the image's latest stored prediction, if they fit."""
    maps = [project.prediction_map(image_id, kind) for kind in ("prob", "fuzzy")]
    return tuple(None if m is None or m.shape != shape else m for m in maps)  # type: ignore[return-value]


def export_project(project: Project, out_dir: Path, mm_per_px: float | None = None) -> list[Path]:
    """Export the latest correction of every image in the project, with the probabilities and
    fuzzy fractions of its latest stored prediction where there is one; one lesions.csv for all
    (an earlier table there keeps its rows of other photos: ``outputs.write_folder_csv``)."""
    files: list[Path] = []
    rows: list[dict] = []
    written: set[str] = set()
    for pair in project.corrected_pairs():
        rgb, _ = read_image(pair.image)
        lab = project.latest_label(pair.id)
        assert lab is not None
        prob, fuzzy = _stored_maps(project, pair.id, lab.shape)
        anatomy = Anatomy.from_dict(project.prediction_settings(pair.id).get("anatomy"))
        f, r = export_image(out_dir, pair.id, rgb, lab, prob, fuzzy, mm_per_px=mm_per_px, anatomy=anatomy)
        files += f
        rows += r
        written.add(pair.id)
    write_folder_csv(out_dir / "lesions.csv", rows, LESION_CSV_COLUMNS, written)
    return files + [out_dir / "lesions.csv"]
