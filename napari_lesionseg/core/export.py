"""Export: lossless masks, the lesion table as CSV (mm2 given a calibration) and a PNG
overlay, for one image or a whole project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from .atomic import atomic_write_bytes
from .image_io import encode_png, read_image, write_label
from .lesions import lesion_table
from .outputs import LESION_CSV_COLUMNS, write_csv
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
    for value, colour in ((1, LESION_RGB), (255, UNSURE_RGB)):
        m = np.asarray(label) == value
        edge = m & ~ndimage.binary_erosion(m, iterations=2)
        out[edge] = colour
    return out


def export_image(out_dir: Path, stem: str, rgb: NDArray[np.uint8], label: NDArray,
                 prob: NDArray[np.float32] | None = None, fuzzy: NDArray[np.float32] | None = None,
                 mm_per_px: float | None = None) -> list[Path]:
    """``<stem>_mask.png`` (0/1/255 label map), ``<stem>_lesions.csv``, ``<stem>_overlay.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lab = np.asarray(label).astype(np.uint8)
    p = prob if prob is not None else (lab == 1).astype(np.float32)
    lesions, _ = lesion_table((lab == 1).astype(np.uint8), p, fuzzy, mm_per_px)
    files = [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_lesions.csv", out_dir / f"{stem}_overlay.png"]
    write_label(files[0], lab)
    write_csv(files[1], [{"image": stem, **les.row()} for les in lesions], LESION_CSV_COLUMNS)
    atomic_write_bytes(files[2], encode_png(overlay(rgb, lab, fuzzy)))
    return files


def export_project(project: Project, out_dir: Path, mm_per_px: float | None = None) -> list[Path]:
    """Export the latest correction of every image in the project; one lesions.csv for all."""
    files: list[Path] = []
    rows = []
    for pair in project.corrected_pairs():
        rgb, _ = read_image(pair.image)
        lab = project.latest_label(pair.id)
        assert lab is not None
        files += export_image(out_dir, pair.id, rgb, lab, mm_per_px=mm_per_px)
        lesions, _ = lesion_table((lab == 1).astype(np.uint8), (lab == 1).astype(np.float32), None, mm_per_px)
        rows += [{"image": pair.id, **les.row()} for les in lesions]
    write_csv(out_dir / "lesions.csv", rows, LESION_CSV_COLUMNS)
    return files + [out_dir / "lesions.csv"]
