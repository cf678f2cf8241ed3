"""npe2 reader (project folders, IDRiD lesion-mask TIFFs) and writer (lossless labels)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core.errors import LesionsegInputError
from .core.image_io import read_image, read_mask, write_label
from .core.segment_layers import lesion_style
from .core.store import MANIFEST, Project

IDRID_MASK_SUFFIXES = ("_HE", "_MA", "_EX", "_SE", "_OD")
LayerData = list[tuple[Any, dict[str, Any], str]]


def _is_project(p: Path) -> bool:
    return p.is_dir() and (p / "images").is_dir() and (p / "labels").is_dir() and (
        (p / MANIFEST).exists() or any((p / "labels").iterdir()))


def get_reader(path: str | list[str]) -> Callable[[Any], LayerData] | None:
    if isinstance(path, list):
        return None
    p = Path(path)
    if p.name == MANIFEST and _is_project(p.parent):  # open a project through its manifest
        return lambda _path: read_project(str(p.parent))
    if _is_project(p):
        return read_project
    if p.suffix.lower() in (".tif", ".tiff") and p.stem.upper().endswith(IDRID_MASK_SUFFIXES):
        return read_idrid_mask
    return None


def read_idrid_mask(path: str) -> LayerData:
    mask = read_mask(path)
    return [(mask, {"name": Path(path).stem, "opacity": 0.6}, "labels")]


def read_project(path: str) -> LayerData:
    """Each photo of the project with its latest correction."""
    proj = Project(path)
    out: LayerData = []
    for iid in proj.image_ids():
        img = proj.image_path(iid)
        if img is None:
            continue
        try:
            rgb, _ = read_image(img)
        except LesionsegInputError:
            continue
        out.append((rgb, {"name": iid, "rgb": True, "metadata": {"path": str(img)}}, "image"))
        lab = proj.latest_label(iid)
        if lab is not None:
            out.append((lab, {"name": f"{iid} correction", **lesion_style()}, "labels"))
    return out


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Lossless label writer (PNG/TIFF); JPEG is not offered."""
    write_label(path, data)
    return [path]
