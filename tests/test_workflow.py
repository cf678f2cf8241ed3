"""The whole workflow in one real viewer, as an annotator walks it: sample, segment, review,
correct, save, switch photos, reopen, fine-tune, promote, export. At the end every saved
correction is on disk as painted, no layer is duplicated, no process or key binding is left."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytestmark = pytest.mark.gui


def _run(qtbot, seg) -> None:
    assert seg.run() is not None
    qtbot.waitUntil(lambda: seg.run_button.enabled and "lesion(s)" in seg.status.text(), timeout=120_000)


def test_the_whole_workflow(make_napari_viewer, qtbot, tmp_path: Path, tiny_model_dir: Path) -> None:
    from qtpy.QtCore import QProcess

    from napari_lesionseg.core.image_io import read_label
    from napari_lesionseg.core.registry import Registry

    project = tmp_path / "proj"
    shutil.copytree(tiny_model_dir, project / "models" / "tiny")
    Registry(project).promote("tiny")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lesionseg", "idrid_16")
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions", tabify=True)
    _, ft = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Fine-tune model", tabify=True)
    seg.project_edit.setText(str(project))  # typed once, for all three docks
    seg.load_project_models()
    assert ft.project_edit.text() == rev.project_edit.text() == str(project)

    # segment, review, correct, save
    _run(qtbot, seg)
    rev.image_picker.choose("IDRiD_16")
    rev.refresh()
    if rev.review.regions:
        rev.next()
        rev.mark_unsure()
    lab = viewer.layers["IDRiD_16 lesions"]
    lab.paint((700, 1000), 1)
    painted_16 = np.asarray(lab.data).copy()
    v1 = seg.save_correction()
    assert v1 is not None

    # another photo: switching away saves nothing new (already saved), its own edit is saved
    viewer.open_sample("napari-lesionseg", "idrid_04")
    seg.image_picker.choose("IDRiD_04")
    _run(qtbot, seg)
    viewer.layers["IDRiD_04 lesions"].paint((400, 600), 1)
    painted_04 = np.asarray(viewer.layers["IDRiD_04 lesions"].data).copy()
    seg.image_picker.choose("IDRiD_16")  # leaving IDRiD_04 saves its edit
    assert sorted(p.name for p in (project / "labels" / "IDRiD_16").glob("v*.png")) == ["v0001.png"]
    assert sorted(p.name for p in (project / "labels" / "IDRiD_04").glob("v*.png")) == ["v0001.png"]

    # fine-tune on the two corrections, promote
    ft.minutes.value = 1.0
    # a 3-step run rarely beats the base model: take its checkpoint all the same (a version that
    # kept the base weights has nothing to promote), and it may score worse
    ft.extra_args = ["--steps", "3", "--no-keep-base"]
    proc = ft.start()
    with qtbot.waitSignal(proc.finished, timeout=300_000):
        pass
    assert ft.new_version is not None, ft.status.text()
    assert ft.promote_button.enabled
    ft.promote(anyway=True)
    assert Registry(project).active().name == ft.new_version.name
    # Segment uses the promoted model at once (it once kept the old one until Enter was pressed)
    assert seg.session.model_path() == Registry(project).active()
    assert seg.model_picker.label.startswith(ft.new_version.name)

    # export
    everything = seg.export_project()
    assert (project / "exports" / "lesions.csv") in everything

    # napari opened anew: the corrections come back as painted
    viewer2 = make_napari_viewer()
    viewer2.open_sample("napari-lesionseg", "idrid_16")
    _, seg2 = viewer2.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    seg2.project_edit.setText(str(project))
    np.testing.assert_array_equal(viewer2.layers["IDRiD_16 lesions"].data, painted_16)

    # on disk, exactly as painted
    for iid, painted in (("IDRiD_16", painted_16), ("IDRiD_04", painted_04)):
        stored = read_label(project / "labels" / iid / "v0001.png")
        expected = np.where(painted == 255, 255, (painted != 0).astype(np.uint8))
        np.testing.assert_array_equal(stored, expected)
    names = [ly.name for ly in viewer.layers]
    assert len(names) == len(set(names)) and not any("[" in n for n in names), names

    # closing the docks leaves no process and no key binding of ours
    n_keys = len(viewer.keymap)
    for w in (rev, ft, seg):
        viewer.window.remove_dock_widget(w)
    assert ft.process is None or ft.process.state() == QProcess.NotRunning
    assert len(viewer.keymap) == n_keys - 3


@pytest.mark.gui
def test_a_folder_predicted_headless_is_reviewed_in_the_viewer(make_napari_viewer, qtbot, tmp_path: Path,
                                                               tiny_model_dir: Path, small_pairs: Path) -> None:
    """A lab segments a folder on a server (``lesionseg predict --project``), then an annotator
    walks it in napari most uncertain first, with nothing to run: each photo opens with its
    prediction's layers, and an edit is kept as a correction when the next photo opens."""
    from test_cli import lesionseg

    from napari_lesionseg.core.store import Project

    project = tmp_path / "proj"
    r = lesionseg("predict", small_pairs / "images", "--project", project, "--model", tiny_model_dir, "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"lesionseg gui --project {project}" in r.stdout and "Open next image" in r.stdout
    order = [iid for iid, score in Project(project).images_by_uncertainty() if score is not None]
    assert sorted(order) == ["IDRiD_04", "IDRiD_16"]

    viewer = make_napari_viewer()
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    rev.project_edit.setText(str(project))
    rev.project_edit.editingFinished.emit()
    first = rev.open_next_image()
    qtbot.waitUntil(lambda: not rev.turns.busy and rev.next_image_button.enabled, timeout=30_000)
    assert first == order[0]
    assert {f"{first} lesions", f"{first} probability", f"{first} fuzzy"} <= {ly.name for ly in viewer.layers}
    assert "image 1 of 2 by uncertainty" in rev.info.text() and "no prediction" not in rev.info.text()
    assert "possible missed lesion(s)" in rev.info.text()  # the list's summary stays beside the place
    assert rev.image_picker.name == first

    lab = viewer.layers[f"{first} lesions"]
    lab.paint((150, 250), 1)
    painted = np.asarray(lab.data).copy()
    second = rev.open_next_image()
    qtbot.waitUntil(lambda: not rev.turns.busy and rev.next_image_button.enabled, timeout=30_000)
    assert second == order[1] and first not in viewer.layers
    saved = Project(project).latest_label(first)
    assert saved is not None and np.array_equal(saved, painted)
