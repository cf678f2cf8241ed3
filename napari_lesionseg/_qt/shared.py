"""One annotation session per viewer, shared by the docks (one project setting for all)."""

from __future__ import annotations

import gc
import weakref
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
