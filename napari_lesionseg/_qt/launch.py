"""What ``lesionseg gui`` opens: napari with photos (or the bundled sample) and the
*Segment lesions* dock, ready to press Run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLUGIN = "napari-lesionseg"


def open_segment_window(viewer: Any, photos: Sequence[str | Path] = (), project: str | Path | None = None) -> Any:
    """Open ``photos`` (else the bundled IDRiD sample) in ``viewer`` and dock *Segment lesions*
    (with ``project`` as the project folder); returns the dock's widget. A project that holds
    photos and no ``photos`` given (``lesionseg predict --project`` filled it): its most
    uncertain photo instead of the sample, with *Review lesions* docked beside, as *Open next
    image* opens it."""
    review_project = not photos and project is not None and _holds_photos(Path(project).expanduser())
    files = photo_files(photos) if photos else []
    unread = [problem for f in files if (problem := open_photo(viewer, f))]
    if files and len(unread) == len(files):
        from ..core.errors import LesionsegInputError

        raise LesionsegInputError(None, "; ".join(unread))
    if not photos and not review_project:
        viewer.open_sample(PLUGIN, "idrid_04")
        for layer in viewer.layers:
            if layer.name.endswith("ground truth"):
                layer.visible = False
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment lesions")
    if unread:  # the others are open: said, not a traceback that closed the window before it opened
        from napari.utils.notifications import show_warning

        show_warning("not opened: " + "; ".join(unread))
    if project is not None:
        widget.project_edit.setText(str(project))
        widget.load_project_models()
    if review_project:
        _, review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review lesions", tabify=True)
        review.open_next_image()
    return widget


MAX_PHOTOS = 20  # more at once: a project, one photo at a time


def open_photo(viewer: Any, path: Path) -> str | None:
    """Open one photo as napari opens a file; one napari has no reader for (AVIF, a JPEG named
    .jfif ...) through our reader, with its path in the layer's metadata (the project keeps it
    by its file). Returns why it could not be opened (a HEIC photo, a broken file), else None."""
    from ..core.errors import LesionsegInputError
    from ..core.image_io import read_image

    try:
        viewer.open(str(path))
        return None
    except Exception:  # noqa: BLE001 - napari has no reader for it, or its reader failed: ours decides
        pass
    try:
        rgb, _ = read_image(path)
    except LesionsegInputError as err:
        return str(err)
    viewer.add_image(rgb, name=path.stem, rgb=True, metadata={"path": str(path)})
    return None


def photo_files(photos: Sequence[str | Path]) -> list[Path]:
    """The photos to open: files as given, a folder's photos each as its own layer (napari made
    a folder one stack, which is no photo to segment, and a folder of photos of different sizes
    failed to open). More than :data:`MAX_PHOTOS` are refused with the way to review a batch."""
    from ..core.batch import collect_images
    from ..core.errors import LesionsegInputError

    first = Path(photos[0]) if photos else Path(".")
    files = collect_images(photos, subfolders_hint=f"open photos by name, or segment them all into a project, "
                                                   f"'lesionseg predict {first} -r --project proj', then 'lesionseg gui "
                                                   "--project proj' opens them one at a time, most uncertain first")
    if len(files) > MAX_PHOTOS:
        raise LesionsegInputError(first, f"{len(files)} photos are too many to open at once (at most {MAX_PHOTOS}): "
                                         f"segment them into a project, 'lesionseg predict {first} --project proj', "
                                         "then 'lesionseg gui --project proj' opens them one at a time, most "
                                         "uncertain first")
    return files


def _holds_photos(folder: Path) -> bool:
    """True when ``folder`` is a project with photos in it (nothing is created to find out)."""
    images = folder / "images"
    return images.is_dir() and any(not f.name.startswith(".") for f in images.iterdir())
