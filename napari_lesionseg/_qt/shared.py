"""One annotation session per viewer, shared by the docks (one project setting for all)."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

from ..core.errors import LesionsegInputError
from ..core.image_io import decodable
from ..core.segment_layers import OPENED_FROM, all_layer_names, layer_names
from ..core.session import AnnotationSession, Photo
from ._arrays import as_rgb_uint8

_SESSIONS: weakref.WeakKeyDictionary[Any, AnnotationSession] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> AnnotationSession:
    """The viewer's session, made on first use; it goes with the viewer."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = AnnotationSession()
        settle_garbage_collector()
        follow_opened_projects(viewer, session)
        forget_closed_photos(viewer, session)
        follow_project_switches(viewer, session)
        follow_layer_names(viewer, session)
        mend_misread_photos(viewer)
    return session


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


def follow_project(edit: Any, session: AnnotationSession) -> None:
    """Keep a dock's project field and the viewer's one project setting in step, both ways.
    A folder typed in the field counts when the typing ends (Enter, or leaving the field): a
    project applied at every keystroke created a folder for each prefix of the path typed
    (``m``, ``my``, ``myp`` ...). Text set by the program (a folder chosen in the dialog, a
    script) counts at once."""
    if session.project_dir is not None and not edit.text():
        edit.setText(str(session.project_dir))
    typing = [False]  # Qt emits textEdited (typing only) just before textChanged

    def typed(_text: str) -> None:
        typing[0] = True

    def changed(text: str) -> None:
        if typing[0]:
            typing[0] = False
            return
        session.set_project(text or None)

    def finished() -> None:
        session.set_project(edit.text() or None)

    def from_session(folder: Any) -> None:
        text = "" if folder is None else str(folder)
        if edit.text() != text:
            edit.blockSignals(True)
            edit.setText(text)
            edit.blockSignals(False)

    edit._lesionseg_listener = from_session
    session.project_listeners.append(from_session)
    edit.textEdited.connect(typed)
    edit.textChanged.connect(changed)
    edit.editingFinished.connect(finished)


def unfollow_project(edit: Any, session: AnnotationSession) -> None:
    listener = getattr(edit, "_lesionseg_listener", None)
    if listener in session.project_listeners:
        session.project_listeners.remove(listener)


def button(text: str, action: Callable[[], object], **kwargs: Any) -> Any:
    """A magicgui push button that calls ``action()`` when clicked (the click's value dropped)."""
    from magicgui.widgets import PushButton

    b = PushButton(text=text, **kwargs)
    b.changed.connect(lambda _=None: action())
    return b


def panel(*widgets: Any, form: bool = False, **kwargs: Any) -> Any:
    """magicgui widgets side by side on one line of a dock, or with ``form`` one under another,
    each after its label; no margins (the dock has its own)."""
    from magicgui.widgets import Container

    c = Container(widgets=list(widgets), layout="vertical" if form else "horizontal", labels=form, **kwargs)
    c.margins = (0, 0, 0, 0)
    return c


class DockWidget(QWidget):
    """A dock that cleans up after itself: napari removes a closed dock by taking it out of
    its parent (the widget lives on while the viewer's events refer to it), so the first
    change to no parent after being docked, a close, or napari's window closing calls
    :meth:`release` once (the window's children are deleted without either of the first two:
    a fine-tune's process was then killed before it could remove its run folder).

    Docked the first time beside another of this plugin's docks, it joins it as a tab: the
    three docks stacked at 1600x1000 made the window taller than the screen."""

    _docked = False
    _released = False
    _watched: QWidget | None = None

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.ParentChange:
            if self.parent() is not None:
                if not self._docked:
                    QTimer.singleShot(0, self._tab_with_ours)  # once napari has placed the dock
                self._docked = True
            elif self._docked:
                self._release_once()
        return super().event(e)

    def _watch(self, window: QWidget) -> None:
        """Release when the top-level window (napari's) closes."""
        if window is self or window is self._watched:
            return
        if self._watched is not None:
            self._watched.removeEventFilter(self)
        self._watched = window
        window.installEventFilter(self)

    def eventFilter(self, obj: Any, e: QEvent) -> bool:  # noqa: N802 - Qt's name
        if obj is self._watched and e.type() == QEvent.Close:
            self._release_once()
        return False

    def _tab_with_ours(self) -> None:
        self._watch(self.window())  # napari's main window, now that the dock is in it
        dock = self.parentWidget()
        main = dock.parentWidget() if isinstance(dock, QDockWidget) else None
        if not isinstance(main, QMainWindow) or dock.isFloating() or main.tabifiedDockWidgets(dock):
            return
        area = main.dockWidgetArea(dock)
        ours = [d for d in main.findChildren(QDockWidget)
                if d is not dock and isinstance(d.widget(), DockWidget) and d.isVisible() and not d.isFloating()
                and main.dockWidgetArea(d) == area]
        if ours:
            main.tabifyDockWidget(ours[-1], dock)
            dock.show()
            dock.raise_()

    def closeEvent(self, e: Any) -> None:  # noqa: N802 - Qt's name
        self._release_once()
        super().closeEvent(e)

    def _release_once(self) -> None:
        if not self._released:
            self._released = True
            if self._watched is not None:
                self._watched.removeEventFilter(self)
                self._watched = None
            self.release()

    def release(self) -> None:
        """Stop workers and processes, drop key bindings and event connections."""

    def _error(self, message: str) -> None:
        """Say it in the dock's status line (``self.status``) and as a napari notification;
        nothing once the dock is released (a background job that failed after the dock or
        napari closed once wrote to a deleted label, raising in the event loop)."""
        from napari.utils.notifications import show_error

        if self._released:
            return
        self.status.setText(message)
        show_error(message)


class LayerPicker:
    """A magicgui ComboBox of names drawn from the viewer's layer list, which follows the list by
    itself: the choices are read again when layers come, go, move or are renamed, the chosen
    name is kept while it is there, and ``changed`` fires only when the chosen name itself
    changes (a layer added elsewhere is not a switch). ``name_of(layer)`` gives the name a layer
    is listed under, or None to leave it out. With ``prefer_selected``, when the chosen name
    goes the selected layer (if listed) is chosen rather than the first. When the chosen layer
    itself is renamed, the new name is chosen and ``on_renamed`` callbacks get ``(old, new)``
    instead of ``changed`` firing: the same photo, not a switch."""

    def __init__(self, viewer: Any, name_of: Callable[[Any], str | None], *, prefer_selected: bool = False,
                 tooltip: str = "") -> None:
        from magicgui.widgets import ComboBox

        self.viewer = viewer
        self._name_of = name_of
        self._prefer_selected = prefer_selected
        self.widget = ComboBox(choices=lambda _w: self._names(), tooltip=tooltip or None)
        self.native = self.widget.native
        self.changed = self.widget.changed
        self.on_renamed: list[Callable[[str, str], None]] = []
        self._chosen: weakref.ref[Any] | None = None  # the chosen layer itself, to tell a rename from a switch
        ev = viewer.layers.events
        self._events = (ev.inserted, ev.removed, ev.reordered, ev.renamed)
        for e in self._events:
            e.connect(self.refresh)
        self.widget.changed.connect(self._remember)  # a choice made in the box, or by choose()
        self.refresh()

    def _remember(self, value: str | None) -> None:
        self._chosen = weakref.ref(self._layer(value)) if value in self.widget.choices else None

    def _names(self) -> list[str]:
        names = [self._name_of(ly) for ly in self.viewer.layers]
        return [n for n in names if n]

    @property
    def name(self) -> str:
        """The chosen name, "" when there is nothing to choose."""
        return self.widget.value or ""

    @property
    def names(self) -> list[str]:
        return list(self.widget.choices)

    def choose(self, name: str) -> bool:
        """Choose ``name`` if it is listed."""
        if name not in self.widget.choices:
            return False
        self.widget.value = name
        return True

    def refresh(self, *_: object) -> None:
        before = self.widget.value
        chosen = self._chosen() if self._chosen is not None else None
        renamed = None
        with self.widget.changed.blocked():
            self.widget.reset_choices()
            if before not in self.widget.choices:
                now = self._name_of(chosen) if chosen is not None and chosen in self.viewer.layers else None
                if now in self.widget.choices:
                    self.widget.value = renamed = now
                elif self._prefer_selected:
                    active = self.viewer.layers.selection.active
                    name = self._name_of(active) if active is not None else None
                    if name in self.widget.choices:
                        self.widget.value = name
        value = self.widget.value
        self._remember(value)
        if renamed is not None:
            for callback in list(self.on_renamed):
                callback(before, renamed)
        elif value != before:
            self.widget.changed.emit(value)

    def _layer(self, name: str) -> Any:
        """The layer listed under ``name``."""
        return next(ly for ly in self.viewer.layers if self._name_of(ly) == name)

    def release(self) -> None:
        for e in self._events:
            e.disconnect(self.refresh)


LOAD_MODEL_LABEL = "load model folder..."
_LOAD = "\x00load"  # the value of the last entry (a model's value is its folder, a Path)


class ModelPicker:
    """A magicgui ComboBox of model folders under readable labels, ending with an entry that
    asks for a folder (``ask_folder()``: a path, or None when the person cancels, which keeps
    the model chosen before). ``changed`` fires with the chosen folder when it changes."""

    def __init__(self, models: dict[str, Path], ask_folder: Callable[[], str | None], *,
                 tooltip: str = "") -> None:
        from magicgui.widgets import ComboBox
        from psygnal import SignalInstance

        self._models = dict(models)
        self._ask_folder = ask_folder
        self.changed = SignalInstance((object,))
        self.widget = ComboBox(choices=self._choices(), tooltip=tooltip or None)
        self.native = self.widget.native
        self._path: Path | None = self.widget.value
        self.widget.changed.connect(self._on_changed)

    def _choices(self, *, load_entry: bool = True) -> list[tuple[str, Any]]:
        return [*self._models.items()] + ([(LOAD_MODEL_LABEL, _LOAD)] if load_entry else [])

    @property
    def path(self) -> Path | None:
        """The chosen model folder."""
        return self._path

    @property
    def label(self) -> str:
        return next((lab for lab, p in self._models.items() if p == self._path), "")

    @property
    def labels(self) -> list[str]:
        """Every entry as shown, the folder dialog's last."""
        return [lab for lab, _ in self._choices()]

    def add(self, folder: str | Path, label: str | None = None) -> str:
        """List ``folder`` (once: a listed folder keeps its label) and return its label."""
        path = Path(folder)
        for lab, known in self._models.items():
            if known == path:
                return lab
        label = label or f"{path.name} ({path.parent})"
        self._models[label] = path
        with self.widget.changed.blocked():
            # magicgui appends a new choice at the end: take the dialog's entry out and put it
            # back, so that it stays last
            self.widget.choices = self._choices(load_entry=False)
            self.widget.choices = self._choices()
            self.widget.value = self._path
        return label

    def choose(self, folder: str | Path) -> None:
        """Choose ``folder``, listing it first if needed (``changed`` fires if it is a change)."""
        path = Path(folder)
        self.add(path)
        self.widget.value = path

    def choose_label(self, label: str) -> None:
        self.choose(self._models[label])

    def _on_changed(self, value: Any) -> None:
        if value == _LOAD:
            folder = self._ask_folder()
            if folder:
                self.choose(folder)
            else:
                with self.widget.changed.blocked():
                    self.widget.value = self._path
            return
        if value != self._path:
            self._path = value
            self.changed.emit(value)


class StepQueue:
    """Work for the GUI thread cut into steps, one per turn of the Qt event loop, so that the
    viewer repaints and takes input between them (napari takes 0.1-0.4 s of the GUI thread to
    add or remove a layer of a full-size photo: benchmarks/gui_pauses.py). A step may put more
    steps next (:meth:`run_next`); a step that raises drops the rest. ``when_idle`` callbacks
    run each time the queue empties."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], object]] = []
        self.when_idle: list[Callable[[], object]] = []

    @property
    def busy(self) -> bool:
        return bool(self._steps)

    def run(self, steps: list[Callable[[], object]]) -> None:
        """Queue ``steps`` after those waiting; the first runs now if nothing was waiting."""
        idle = not self._steps
        self._steps.extend(steps)
        if idle and self._steps:
            self._next()

    def run_next(self, steps: list[Callable[[], object]]) -> None:
        """From inside a step: ``steps`` come before the ones already waiting."""
        self._steps[:0] = steps

    def clear(self) -> None:
        self._steps.clear()

    def _next(self) -> None:
        try:
            if self._steps:
                self._steps.pop(0)()
        except Exception:
            self._steps.clear()
            raise
        finally:
            if self._steps:
                QTimer.singleShot(0, self._next)
            else:
                for callback in list(self.when_idle):
                    callback()


class WhenSettled:
    """Runs ``action`` once changes settle, ``ms`` after the last :meth:`poke`; for a dock in a
    tab behind another (Qt leaves it "visible" with nothing of it on screen), when its tab is
    chosen instead (``waiting`` holds that dock meanwhile). For work too slow to redo on every
    paint stroke or slider step that only a dock on screen shows."""

    def __init__(self, widget: QWidget, action: Callable[[], object], ms: int) -> None:
        self.widget = widget
        self.action = action
        self.waiting: QDockWidget | None = None
        self.timer = QTimer(widget)
        self.timer.setSingleShot(True)
        self.timer.setInterval(ms)
        self.timer.timeout.connect(self._fire)

    def poke(self) -> None:
        self.timer.start()

    def _fire(self) -> None:
        if getattr(self.widget, "_released", False):  # the dock was closed meanwhile
            return
        dock = self.widget.parentWidget()
        if self.widget.window().isVisible() and self.widget.visibleRegion().isEmpty() and isinstance(dock, QDockWidget):
            if self.waiting is None:
                self.waiting = dock
                dock.visibilityChanged.connect(self._on_shown)
            return
        self.action()

    def _on_shown(self, visible: bool) -> None:
        dock = self.waiting
        if visible and dock is not None:
            self.waiting = None
            with contextlib.suppress(TypeError, RuntimeError):
                dock.visibilityChanged.disconnect(self._on_shown)
            self.timer.start()


class ProjectField:
    """The project folder as a magicgui ``FileEdit`` (a folder field and a button that opens a
    folder dialog), kept in step with the viewer's one project setting. ``line_edit`` is its
    text field; ``on_done()`` runs when a folder is entered (Enter, leaving the field) or
    chosen in the dialog."""

    def __init__(self, session: AnnotationSession, placeholder: str,
                 on_done: Callable[[], object] | None = None) -> None:
        from magicgui.widgets import FileEdit

        self.session = session
        self.widget = FileEdit(mode="d", tooltip="the project folder (shared by the lesion segmentation docks)")
        self.widget.choose_btn.text = "Browse..."
        self.widget.margins = (0, 0, 0, 0)
        self.native = self.widget.native
        self.line_edit = self.widget.line_edit.native
        self.line_edit.setPlaceholderText(placeholder)
        follow_project(self.line_edit, session)
        if on_done is not None:
            self.line_edit.editingFinished.connect(on_done)
            # after FileEdit's own handler, which sets the chosen folder (nothing when cancelled)
            self.widget.choose_btn.changed.connect(lambda *_: on_done() if self.line_edit.text() else None)

    def release(self) -> None:
        unfollow_project(self.line_edit, self.session)
