"""One annotation session per viewer, shared by the docks (one project setting for all)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QWidget

from ..core.session import AnnotationSession

_SESSIONS: weakref.WeakKeyDictionary[Any, AnnotationSession] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> AnnotationSession:
    """The viewer's session, made on first use; it goes with the viewer."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = AnnotationSession()
        settle_garbage_collector()
    return session


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


def follow_project(edit: Any, session: AnnotationSession) -> None:
    """Keep a dock's project field and the viewer's one project setting in step, both ways."""
    if session.project_dir is not None and not edit.text():
        edit.setText(str(session.project_dir))

    def from_session(folder: Any) -> None:
        text = "" if folder is None else str(folder)
        if edit.text() != text:
            edit.blockSignals(True)
            edit.setText(text)
            edit.blockSignals(False)

    edit._lesionseg_listener = from_session
    session.project_listeners.append(from_session)
    edit.textChanged.connect(lambda text: session.set_project(text or None))


def unfollow_project(edit: Any, session: AnnotationSession) -> None:
    listener = getattr(edit, "_lesionseg_listener", None)
    if listener in session.project_listeners:
        session.project_listeners.remove(listener)


class DockWidget(QWidget):
    """A dock that cleans up after itself: napari removes a closed dock by taking it out of
    its parent (the widget lives on while the viewer's events refer to it), so the first
    change to no parent after being docked, or a close, calls :meth:`release` once."""

    _docked = False
    _released = False

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self._release_once()
        return super().event(e)

    def closeEvent(self, e: Any) -> None:  # noqa: N802 - Qt's name
        self._release_once()
        super().closeEvent(e)

    def _release_once(self) -> None:
        if not self._released:
            self._released = True
            self.release()

    def release(self) -> None:
        """Stop workers and processes, drop key bindings and event connections."""


class LayerPicker:
    """A magicgui ComboBox of names drawn from the viewer's layer list, which follows the list by
    itself: the choices are read again when layers come, go, move or are renamed, the chosen
    name is kept while it is there, and ``changed`` fires only when the chosen name itself
    changes (a layer added elsewhere is not a switch). ``name_of(layer)`` gives the name a layer
    is listed under, or None to leave it out. With ``prefer_selected``, when the chosen name
    goes the selected layer (if listed) is chosen rather than the first."""

    def __init__(self, viewer: Any, name_of: Callable[[Any], str | None], *, prefer_selected: bool = False,
                 tooltip: str = "") -> None:
        from magicgui.widgets import ComboBox

        self.viewer = viewer
        self._name_of = name_of
        self._prefer_selected = prefer_selected
        self.widget = ComboBox(choices=lambda _w: self._names(), tooltip=tooltip or None)
        self.native = self.widget.native
        self.changed = self.widget.changed
        ev = viewer.layers.events
        self._events = (ev.inserted, ev.removed, ev.reordered, ev.renamed)
        for e in self._events:
            e.connect(self.refresh)
        self.refresh()

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
        with self.widget.changed.blocked():
            self.widget.reset_choices()
            if before not in self.widget.choices and self._prefer_selected:
                active = self.viewer.layers.selection.active
                name = self._name_of(active) if active is not None else None
                if name in self.widget.choices:
                    self.widget.value = name
        if self.widget.value != before:
            self.widget.changed.emit(self.widget.value)

    def release(self) -> None:
        for e in self._events:
            e.disconnect(self.refresh)
