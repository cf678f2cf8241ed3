"""Make docs/screenshot.png: the sample in napari with the three docked widgets after a
segmentation with the shipped default model. Run under a display, e.g.
``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshot.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def _settle(viewer: napari.Viewer) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for _ in range(20):
        QApplication.processEvents()
    for w in viewer.window._qt_window.findChildren(NapariQtNotification):
        w.close()
    for _ in range(5):
        QApplication.processEvents()


def main(out: Path) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-lesionseg", "idrid_04")
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    _, review = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions", tabify=True)
    worker = seg.run()
    while worker.is_running or seg.run_button.isEnabled() is False:
        QApplication.processEvents()
    viewer.layers["IDRiD_04 ground truth"].visible = False
    viewer.reset_view()
    viewer.window._dock_widgets["Segment lesions (napari-lesionseg)"].raise_()
    _settle(viewer)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"wrote {out}")
    review.image_combo.setCurrentText("IDRiD_04")
    review.refresh()
    review.go(next(i for i, r in enumerate(review.review.regions) if r.kind == "lesion"))
    viewer.window._dock_widgets["Review lesions (napari-lesionseg)"].raise_()
    _settle(viewer)
    second = out.with_name(out.stem + "_review.png")
    viewer.screenshot(str(second), canvas_only=False, flash=False)
    print(f"wrote {second}")
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("screenshot.png"))
