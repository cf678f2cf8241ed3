"""The pieces the docks are built of: buttons and panels, a dock that cleans up after itself,
pickers of layers and of model folders, a queue of steps, a call made when things settle, and
the project field kept in step with the viewer's session."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

from ..core.session import AnnotationSession


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
