"""npe2 reader (project folders, IDRiD lesion-mask TIFFs) and writer (lossless labels)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core.errors import LesionsegInputError
from .core.image_io import read_mask, write_label
from .core.segment_layers import OPENED_FROM, project_image_layers
from .core.store import MANIFEST

IDRID_MASK_SUFFIXES = ("_HE", "_MA", "_EX", "_SE", "_OD")
LayerData = list[tuple[Any, dict[str, Any], str]]


def _is_project(p: Path) -> bool:
    """A folder :class:`Project` made: its manifest, its lock, or the four folders it makes
    (``lesionseg predict --project`` writes no manifest: only a correction does). A dataset's
    ``images/`` and ``labels/`` alone are not a project."""
    if not (p.is_dir() and (p / "images").is_dir() and (p / "labels").is_dir()):
        return False
    return (p / MANIFEST).exists() or (p / ".lock").exists() or (
        (p / "predictions").is_dir() and (p / "models").is_dir())


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
    if p.suffix.lower() in OWN_PHOTO_SUFFIXES:
        return read_photo
    return None


#: photo formats napari's own reader does not open (File > Open said "no compatible readers")
#: and ours does (Pillow; HEIC/HEIF with the optional pillow-heif, else a message saying how);
#: napari.yaml's reader patterns name them
OWN_PHOTO_SUFFIXES = (".avif", ".heic", ".heif")


def read_photo(path: str) -> LayerData:
    """A photo napari does not read, through ours: RGB, its path in the layer's metadata (the
    project keeps it by its file, as a photo napari opened)."""
    from .core.image_io import read_image

    rgb, _ = read_image(path)
    return [(rgb, {"name": Path(path).stem, "rgb": True, "metadata": {"path": str(path)}}, "image")]


def read_idrid_mask(path: str) -> LayerData:
    mask = read_mask(path)
    return [(mask, {"name": Path(path).stem, "opacity": 0.6}, "labels")]


def read_project(path: str) -> LayerData:
    """The photo a review of the project starts at, as *Open next image* and ``lesionseg gui
    --project`` open it (the most uncertain one without a saved correction), with its stored
    prediction and latest correction as the docks show them: ``<id> lesions`` is the editable
    layer the docks save, and every layer names the project (:data:`OPENED_FROM`), which the
    docks then use. Opening every photo at once, as this reader did, took 49 MB per full-size
    photo and showed the corrections as layers no dock knew: edits made in them were lost."""
    from napari.utils.notifications import show_info

    from .core.session import AnnotationSession  # torch: imported only when a project is opened

    session = AnnotationSession()
    session.set_project(path)
    proj = session.project  # the session's own: a project is opened (and repaired) once
    if proj is None:
        raise LesionsegInputError(path, session.no_project_reason)
    unreadable: dict[str, str] = {}
    while (found := session.next_image(skip=unreadable)) is not None:
        try:
            layers = project_image_layers(proj, found.image_id)
        except (LesionsegInputError, OSError) as err:
            unreadable[found.image_id] = str(err)
            continue
        break
    else:
        why = f"none of its {len(unreadable)} photos can be read" if unreadable else "it holds no photos yet"
        raise LesionsegInputError(proj.root, f"nothing to open: {why} ('lesionseg predict PHOTOS --project "
                                             f"{proj.root}' segments photos into it)")
    out: LayerData = [(data, {**kwargs, "metadata": {**kwargs.get("metadata", {}), OPENED_FROM: str(proj.root)}}, kind)
                      for data, kwargs, kind in layers]
    iid, place, count, uncorrected, resumed = found
    where = " (where the last review stood)" if resumed else ""
    show_info(f"{iid}: photo {place} of {count} of the project by uncertainty{where}, {uncorrected} without a saved "
              "correction; the lesion docks keep corrections in this project, and *Review lesions* > "
              "Open next image goes on to the next photo")
    return out


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Lossless label writer (PNG/TIFF); JPEG is not offered."""
    write_label(path, data)
    return [path]
