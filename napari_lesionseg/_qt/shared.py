"""One annotation session per viewer, shared by the docks (one project setting for all)."""

from __future__ import annotations

import weakref
from typing import Any

from ..core.session import AnnotationSession

_SESSIONS: weakref.WeakKeyDictionary[Any, AnnotationSession] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> AnnotationSession:
    """The viewer's session, made on first use; it goes with the viewer."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = AnnotationSession()
    return session
