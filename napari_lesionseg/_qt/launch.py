"""What ``lesionseg gui`` opens: napari with photos (or the bundled sample) and the
*Segment lesions* dock, ready to press Run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLUGIN = "napari-lesionseg"


def open_segment_window(viewer: Any, photos: Sequence[str | Path] = (), project: str | Path | None = None) -> Any:
    """Open ``photos`` (else the bundled IDRiD sample) in ``viewer`` and dock *Segment lesions*
    (with ``project`` as the project folder); returns the dock's widget."""
    if photos:
        for p in photos:
            viewer.open(str(p))
    else:
        viewer.open_sample(PLUGIN, "idrid_04")
        for layer in viewer.layers:
            if layer.name.endswith("ground truth"):
                layer.visible = False
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment lesions")
    if project is not None:
        widget.project_edit.setText(str(project))
        widget.load_project_models()
    return widget
