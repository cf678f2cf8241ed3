"""Pairing images with their masks by file stem (for evaluation and training)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import LesionsegInputError
from .image_io import list_images

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Pair:
    id: str
    image: Path
    mask: Path


def _mask_index(mask_dir: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(mask_dir.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in MASK_SUFFIXES + (".jpg", ".jpeg"):
            out[f.stem] = f
    return out


def match_pairs(images: Path, masks: Path, *, allow_unmatched_images: bool = False) -> list[Pair]:
    """Pair each image in ``images`` with its mask in ``masks`` by file stem.

    Raises LesionsegInputError listing the unmatched files (images without masks are allowed
    with ``allow_unmatched_images``, e.g. IDRiD_43 which has no hemorrhage mask).
    """
    for d in (images, masks):
        if not d.is_dir():
            raise LesionsegInputError(d, "is not a folder")
    idx = _mask_index(masks)
    pairs, missing = [], []
    used: set[str] = set()
    for img in list_images(images):
        cands = [img.stem] + [f"{img.stem}_{s}" for s in ("HE", "mask", "label", "gt", "seg")]
        hit = next((c for c in cands if c in idx), None)
        if hit is None:
            missing.append(img.name)
            continue
        used.add(hit)
        pairs.append(Pair(img.stem, img, idx[hit]))
    orphans = sorted(set(idx) - used)
    problems = []
    if missing and not allow_unmatched_images:
        problems.append(f"images without a mask: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if orphans:
        problems.append(f"masks without an image: {', '.join(orphans[:10])}" + (" ..." if len(orphans) > 10 else ""))
    if problems:
        raise LesionsegInputError(masks, "; ".join(problems))
    if not pairs:
        raise LesionsegInputError(images, "no image/mask pairs found")
    return pairs
