"""Screenshots of each step of the workflow at 1600x1000, in a real viewer with the shipped
default model and the three docks (tabbed, as napari docks them by default on a screen this
size): ``docs/step1_segment.png`` (the README's picture) ... ``docs/step5_finetune.png``, and
``docs/step6_lesion_types.png`` (the bundled five-output model). Run under a display, e.g.
``xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py [OUT_DIR]``.
Takes about two minutes on 2 cores (a 3-step fine-tune of the default model included)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def _settle(viewer: napari.Viewer, seconds: float = 0.3) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
    for w in viewer.window._qt_window.findChildren(NapariQtNotification):
        w.close()
    for _ in range(5):
        QApplication.processEvents()


def _wait(cond, timeout: float = 600.0) -> None:
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            raise TimeoutError("the step did not finish in time")
        QApplication.processEvents()
        time.sleep(0.01)


def _shot(viewer: napari.Viewer, dock: str, out: Path) -> Path:
    viewer.window.dock_widgets[f"{dock} (napari-lesionseg)"].parent().raise_()
    _settle(viewer)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"wrote {out}")
    return out


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix="lesionseg-shots-"))
    try:
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1600, 1000)
        viewer.open_sample("napari-lesionseg", "idrid_04")
        _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
        _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions", tabify=True)
        _, ft = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Fine-tune model", tabify=True)
        seg.project_edit.setText(str(project))
        seg.project_edit.editingFinished.emit()
        viewer.layers["IDRiD_04 ground truth"].visible = False

        # 1. segment
        seg.run()
        _wait(lambda: seg.run_button.enabled and "lesion(s)" in seg.status.text())
        viewer.reset_view()
        _shot(viewer, "Segment lesions", out_dir / "step1_segment.png")

        # 2. review: the queue's first region
        rev.image_picker.choose("IDRiD_04")
        rev.refresh()
        rev.next()
        _shot(viewer, "Review lesions", out_dir / "step2_review.png")

        # 3. correct and save: accept the region, paint a small lesion beside it, save
        rev.accept()
        lab = viewer.layers["IDRiD_04 lesions"]
        r = rev.region()
        y, x = int(r.centroid[0]), int(r.centroid[1]) + 60
        lab.brush_size = 12
        lab.paint((y, x), 1)
        lab.mode = "paint"
        viewer.layers.selection.active = lab
        seg.save_correction()
        _shot(viewer, "Segment lesions", out_dir / "step3_correct_and_save.png")

        # 4. the next photo from the project, segmented, its review queue
        viewer.open_sample("napari-lesionseg", "idrid_16")
        viewer.layers["IDRiD_16 ground truth"].visible = False
        seg.image_picker.choose("IDRiD_16")
        seg.run()
        _wait(lambda: seg.run_button.enabled and "lesion(s)" in seg.status.text())
        lab16 = viewer.layers["IDRiD_16 lesions"]
        lab16.paint((lab16.data.shape[0] // 2, lab16.data.shape[1] // 2), 1)  # a hand-painted lesion
        seg.save_correction()
        for name in ("IDRiD_04", "IDRiD_04 probability", "IDRiD_04 fuzzy", "IDRiD_04 lesions",
                     "IDRiD_04 current region"):
            if name in viewer.layers:
                viewer.layers[name].visible = False
        viewer.reset_view()
        rev.image_picker.choose("IDRiD_16")
        rev.refresh()
        rev.next()
        _shot(viewer, "Review lesions", out_dir / "step4_next_photo_review.png")

        # 5. fine-tune on the two corrections (3 steps: the picture, not a real fine-tune)
        ft.preflight()
        ft.extra_args = ["--steps", "3"]
        proc = ft.start()
        _wait(lambda: proc.state() == proc.NotRunning, timeout=900)
        viewer.reset_view()
        _shot(viewer, "Fine-tune model", out_dir / "step5_finetune.png")
        for w in (rev, ft, seg):
            viewer.window.remove_dock_widget(w)
        viewer.close()
        lesion_types(out_dir)
    finally:
        shutil.rmtree(project, ignore_errors=True)


def lesion_types(out_dir: Path) -> None:
    """6. The bundled five-output model on the sample: four lesion types in their colours, the
    legend, the disc and macula outlines and the lesion table."""
    from napari_lesionseg.core.bundled import bundled_models

    if "multi" not in bundled_models():
        return
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-lesionseg", "idrid_04")
    viewer.layers["IDRiD_04 ground truth"].visible = False
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    seg.set_model_folder(bundled_models()["multi"])
    seg.run()
    _wait(lambda: seg.run_button.enabled and "lesion(s)" in seg.status.text())
    for layer in viewer.layers:
        if layer.name.endswith(("probability", "fuzzy")):
            layer.visible = False
    viewer.reset_view()
    _shot(viewer, "Segment lesions", out_dir / "step6_lesion_types.png")
    viewer.window.remove_dock_widget(seg)
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
