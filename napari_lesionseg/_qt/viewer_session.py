"""One annotation session per viewer, shared by the docks (one project setting for all), and
what keeps it in step with the viewer: layers renamed or removed, photos opened from a project,
open work saved, the photo behind a layer."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..core.errors import LesionsegInputError
from ..core.image_io import decodable
from ..core.segment_layers import OPENED_FROM, all_layer_names, layer_names
from ..core.session import AnnotationSession, Photo
from ._arrays import as_rgb_uint8
from .gl_workaround import keep_gl_programs

_SESSIONS: weakref.WeakKeyDictionary[Any, AnnotationSession] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> AnnotationSession:
    """The viewer's session, made on first use; it goes with the viewer."""
    session = _SESSIONS.get(viewer)
    if session is None:
        keep_gl_programs()  # before any layer of ours comes and goes: removing one crashed napari
        session = _SESSIONS[viewer] = AnnotationSession()
        settle_garbage_collector()
        follow_opened_projects(viewer, session)
        forget_closed_photos(viewer, session)
        follow_project_switches(viewer, session)
        follow_layer_names(viewer, session)
        mend_misread_photos(viewer)
        keep_drafts(viewer, session)
    return session


DRAFT_MS = 2000  # hand edits are kept as a draft once they have settled this long


def keep_drafts(viewer: Any, session: AnnotationSession) -> None:
    """Hand edits kept against a crash: once a photo's lesions layer has been painted (or a Review
    decision made, a lesion type ticked as reviewed) and left alone for :data:`DRAFT_MS`, each
    open photo's unsaved edits and decisions are written as the project's draft of it
    (``Project.save_draft``; its edits undone, the draft goes), on a thread of their own: napari
    killed or crashing (it can: a segmentation fault in software OpenGL, seen under Mesa 22.3)
    then loses at most the last two seconds of work, where it lost everything since the last
    save. A photo opened again shows its draft as unsaved edits (the session's
    ``Photo.draft``). Nothing without a project folder (nowhere to keep them)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="lesionseg-draft")  # one at a time, in order
    timer = QTimer()
    timer.setSingleShot(True)
    timer.setInterval(DRAFT_MS)

    def keep() -> None:
        if session.project is None:
            return
        for name in list(session.photos):
            lname = layer_names(name)["lesions"]
            # the viewer closed or the layer went meanwhile; the model's folder unreadable (its types)
            with contextlib.suppress(RuntimeError, KeyError, LesionsegInputError, OSError):
                if lname in viewer.layers and (job := session.draft_job(name, viewer.layers[lname].data)):
                    pool.submit(_warn_on_failure(job, name))

    def watch(layer: Any) -> None:
        if segmented_photo_name(layer) is not None:  # painted, replaced, or refreshed (napari's undo says only that)
            for emitter in (layer.events.paint, layer.events.data, layer.events.set_data):
                emitter.connect(lambda _event: timer.start())

    timer.timeout.connect(keep)
    session.decision_listeners.append(lambda _name: timer.start())  # Accept paints nothing, a tick neither
    _DRAFT_KEEPERS[viewer] = (timer, pool)
    for layer in list(viewer.layers):
        watch(layer)
    viewer.layers.events.inserted.connect(lambda event: watch(event.value))


_DRAFT_KEEPERS: weakref.WeakKeyDictionary[Any, tuple[QTimer, Any]] = weakref.WeakKeyDictionary()


def _warn_on_failure(job: Callable[[], None], name: str) -> Callable[[], None]:
    def run() -> None:
        import warnings

        try:
            job()
        except (LesionsegInputError, OSError) as err:  # a full disk, a read-only project: saving still says so
            warnings.warn(f"{name}: its unsaved edits could not be kept as a draft: {err}", stacklevel=1)
    return run


def mend_misread_photos(viewer: Any) -> None:
    """Photo layers napari's own reader got wrong (``image_io.napari_misread``: a CMYK JPEG,
    a planar TIFF) get the photo as our reader decodes it, which is what ``lesionseg predict``
    segments: the layers in the viewer now, and any added later (a turn later, outside the
    layer list's own event)."""
    from napari.layers import Image
    from napari.utils.notifications import show_info

    from ..core.image_io import napari_misread, read_image

    def mend(layer: Any) -> None:
        if layer not in viewer.layers:
            return
        path = layer.metadata.get("path") or getattr(layer.source, "path", None)
        reason = napari_misread(path, layer.data.shape, layer.rgb) if path else None
        if reason is None:
            return
        name = layer.name
        try:
            rgb, _ = read_image(path)
        except LesionsegInputError as err:
            show_info(f"'{name}' is {reason}, and it cannot be read as a photo: {err}")
            return
        if layer.rgb:
            layer.data = rgb
            layer.contrast_limits = (0, 255)
        else:  # the layer's dimensions change: a new layer in its place, under its name
            index = viewer.layers.index(layer)
            viewer.layers.remove(layer)
            viewer.add_image(rgb, name=name, rgb=True, metadata={**layer.metadata, "path": str(path)})
            viewer.layers.move(len(viewer.layers) - 1, index)
        show_info(f"'{name}': {Path(path).name} is {reason}; it is shown as the colour photo it holds "
                  "(what lesionseg predict segments)")

    def check(layers: Any) -> None:
        for layer in layers:
            if isinstance(layer, Image) and not layer.metadata.get("lesionseg"):
                QTimer.singleShot(0, lambda ly=layer: mend(ly))

    check(list(viewer.layers))
    viewer.layers.events.inserted.connect(lambda event: check([event.value]))


def follow_layer_names(viewer: Any, session: AnnotationSession) -> None:
    """Layer names as the docks find a photo's results by them. A photo's layer renamed: its
    result layers (``<photo> lesions``, ``probability``, ``fuzzy``, the outlines, Review's frame)
    and its place in the session follow, whichever photo it is and whichever dock is open (only
    the photo chosen in Segment followed, and with Review alone none: Save then failed). A
    result layer renamed ('my edits') takes its name back, with a word on renaming the photo's
    layer instead: found by no dock, its edits were no longer saved, on closing napari or by
    Save ("run the segmentation first")."""
    from napari.utils.notifications import show_info

    suffixes = tuple(f" {kind}" for kind in layer_names(""))  # " probability", " lesions", " fuzzy"
    # result layers being renamed after their photo, new name -> old (not by id: a dock's viewer is
    # napari's proxy, whose layers are new proxy objects at each lookup)
    following: dict[str, str] = {}

    def is_result(layer: Any, name: str) -> bool:
        return bool(getattr(layer, "metadata", {}).get("lesionseg")) and name.endswith(suffixes)

    def follow(old: str, new: str) -> None:
        session.rename_photo(old, new)
        for was, now in zip(all_layer_names(old), all_layer_names(new)):
            if was in viewer.layers and now not in viewer.layers:
                following[now] = was
                viewer.layers[was].name = now

    def watch(layer: Any) -> None:
        held = [layer.name]

        def renamed(_event: object = None) -> None:
            new, old = layer.name, held[0]
            if new == old:
                return
            if following.get(new) == old:  # after its photo
                del following[new]
                held[0] = new
                return
            if not is_result(layer, old):  # a photo (or any other layer): its results follow
                held[0] = new
                follow(old, new)
                return
            layer.name = old
            photo = old[: -len(next(x for x in suffixes if old.endswith(x)))]
            show_info(f"'{old}' keeps its name: the lesion docks find a photo's results by it (renamed "
                      f"'{new}', its edits were no longer saved); rename the photo's layer '{photo}' "
                      "instead, and its results follow")

        layer.events.name.connect(renamed)

    for layer in list(viewer.layers):
        watch(layer)
    viewer.layers.events.inserted.connect(lambda event: watch(event.value))


def follow_project_switches(viewer: Any, session: AnnotationSession) -> None:
    """When the project folder changes, the open photos' unsaved work goes into the project it
    was done in (it went into the new one, under the old one's photo id), and a photo the new
    project holds a correction of shows that correction (when nothing unsaved is shown)."""
    clean: list[str] = []

    def unchanged(name: str) -> bool:
        lname = layer_names(name)["lesions"]
        try:
            return lname in viewer.layers and not session.unsaved(name, viewer.layers[lname].data)
        except (LesionsegInputError, OSError):  # its stored prediction unreadable: left as shown
            return False

    def leaving() -> None:
        with contextlib.suppress(RuntimeError):  # the viewer closed meanwhile
            save_open_work(viewer, session)
            clean[:] = [n for n in session.photos if unchanged(n)]

    def arrived(_folder: Any) -> None:
        with contextlib.suppress(RuntimeError):
            for name in clean:
                photo, lname = session.photos.get(name), layer_names(name)["lesions"]
                if photo is None or photo.saved_version is None or lname not in viewer.layers:
                    continue
                layer = viewer.layers[lname]
                if not np.array_equal(session.label_map(layer.data, name), photo.saved):
                    layer.data = photo.saved.copy()
        clean.clear()

    session.project_leaving_listeners.append(leaving)
    session.project_listeners.append(arrived)


def forget_closed_photos(viewer: Any, session: AnnotationSession) -> None:
    """A photo whose layers are all removed is forgotten by the session (its prediction's maps
    go with it): a turn after the removal, when the docks have saved what the removal would lose."""
    def forget() -> None:
        with contextlib.suppress(RuntimeError):  # the viewer closed meanwhile
            session.forget_closed({layer.name for layer in viewer.layers})

    viewer.layers.events.removed.connect(lambda _event: QTimer.singleShot(0, forget))


def save_open_work(viewer: Any, session: AnnotationSession) -> None:
    """Each open photo's lesions layer as a new version when it holds unsaved work (hand
    edits, or Review decisions made since its last save; nothing without a project): what a
    dock does as it or napari closes, whichever dock it is (Review opened alone lost its edits
    on closing napari). A failure is a warning, as the docks may be gone by then."""
    import warnings

    if session.project is None:
        return
    for name in list(session.photos):
        lname = layer_names(name)["lesions"]
        if lname not in viewer.layers:
            continue
        try:
            session.save_correction(name, np.asarray(viewer.layers[lname].data), only_if_edited=True)
        except (LesionsegInputError, OSError) as err:
            warnings.warn(f"{name}: its hand edits could not be saved on closing: {err}", stacklevel=2)


def keep_removed_work(session: AnnotationSession, layer: Any, say: Callable[[str], object],
                      error: Callable[[str], object]) -> None:
    """A photo's lesions layer was deleted (napari's trash button asks nothing): with a project
    set, its unsaved work becomes a new version first, and ``say`` tells which (``error``: why
    not); the versions before it stay, so nothing saved is lost either. Other layers: nothing."""
    name = segmented_photo_name(layer)
    if name is None or session.project is None or name not in session.photos:
        return
    try:
        version = session.save_correction(name, np.asarray(layer.data), only_if_edited=True)
    except (LesionsegInputError, OSError) as err:
        error(f"the removed '{layer.name}' layer's edits could not be saved: {err}")
        return
    if version is not None:
        say(f"the removed '{layer.name}' layer's work was saved as version {version.version} of {version.image_id}")


def follow_opened_projects(viewer: Any, session: AnnotationSession) -> None:
    """A photo opened from a project (File > Open on it: the layers name it, ``OPENED_FROM``)
    makes that project the docks' one when none is set, so that its edits are kept there: the
    layers in the viewer now, and any added later. With another project set, the annotator is
    told where the photo's corrections will go."""
    from napari.utils.notifications import show_info, show_warning

    def adopt(layers: Any) -> None:
        for layer in layers:
            folder = getattr(layer, "metadata", {}).get(OPENED_FROM)
            if not folder or segmented_photo_name(layer) is None:
                continue  # the lesions layer speaks for the photo's layers
            if session.project_dir is None:
                session.set_project(folder)
                show_info(f"project folder: {folder} (the project '{layer.name}' was opened from)")
            elif Path(folder).resolve() != session.project_dir.resolve():
                show_warning(f"'{layer.name}' was opened from the project {folder}, but the lesion docks keep "
                             f"corrections in {session.project_dir}: set the project folder to keep them there")

    adopt(list(viewer.layers))
    viewer.layers.events.inserted.connect(lambda event: adopt([event.value]))


_GC_SETTLED = False


def settle_garbage_collector() -> None:
    """Once per process, when the first dock opens: collect, then move every object alive now
    (napari, Qt, torch: some 450,000) out of the cyclic garbage collector's reach
    (``gc.freeze``). Without it a full collection walks them all, and one fell while *Segment
    lesions* added its layers: 0.41 s of a 1.0 s freeze of the viewer
    (benchmarks/gui_pauses.py). What is frozen is what lives as long as the process anyway;
    layers and predictions made later stay collectable."""
    global _GC_SETTLED
    if not _GC_SETTLED:
        _GC_SETTLED = True
        gc.collect()
        gc.freeze()


def segmented_photo_name(layer: object) -> str | None:
    """The photo a layer of ours shows the lesions of (``<photo> lesions``), else None."""
    name = getattr(layer, "name", "")
    if name.endswith(" lesions") and getattr(layer, "metadata", {}).get("lesionseg"):
        return name[: -len(" lesions")]
    return None


_SOURCES: weakref.WeakKeyDictionary[Any, tuple[str, str | None]] = weakref.WeakKeyDictionary()


def photo_source(layer: Any) -> str | None:
    """The file a photo layer was read from: what the project's Open next image recorded, else
    what napari's reader did, when our reader decodes it to the pixels the layer shows (None
    for an array with no file, a file only another plugin reads, or a photo napari shows
    otherwise than the file says: such a photo is kept in a project as its pixels)."""
    path = layer.metadata.get("path") or getattr(layer.source, "path", None)
    if not path:
        return None
    key = getattr(layer, "__wrapped__", layer)  # a dock's layers are napari's proxies, new at each lookup
    known = _SOURCES.get(key)
    if known is None or known[0] != path:
        known = _SOURCES[key] = (path, path if decodable(path) and _shows_file(layer, path) else None)
    return known[1]


def _shows_file(layer: Any, path: str) -> bool:
    """Whether the layer shows the file's pixels as our reader gives them. Only a file with an
    EXIF orientation is decoded to compare: napari's own reader does not apply the tag, so a
    photo taken turned (a phone on a fundus adapter) is shown as stored while our reader, the
    command line and the project turn it; a correction drawn on the one is then saved against
    the other (rotated by 90 or 180 degrees, or mirrored)."""
    from ..core.image_io import exif_orientation, read_image

    if exif_orientation(path) == 1:
        return True
    try:
        rgb = read_image(path)[0]
        shown = as_rgb_uint8(layer.data)
    except (LesionsegInputError, ValueError):
        return False
    if rgb.shape != shown.shape:
        return False
    step = max(1, rgb.shape[0] // 256)
    diff = np.abs(rgb[::step, ::step].astype(np.int16) - shown[::step, ::step].astype(np.int16))
    return float(diff.mean()) < 2.0  # one decoder's rounding, not a turned or mirrored photo


def open_layer_photo(session: AnnotationSession, layer: Any, rgb: Any = None) -> Photo:
    """Open the photo layer in the session: by its file, else by its pixels (``rgb``, else
    read from the layer, only when they are needed; a layer that is no photo, such as a stack
    napari made of a folder, is a :class:`LesionsegInputError`)."""
    src = photo_source(layer)

    def pixels() -> Any:
        try:
            return rgb if rgb is not None else as_rgb_uint8(layer.data)
        except ValueError as err:
            raise LesionsegInputError(None, f"{layer.name}: {err}") from None

    return session.open_photo(layer.name, src, pixels=None if src else pixels)
