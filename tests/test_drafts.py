"""Hand edits kept against a crash: a project's draft of each photo's unsaved edits, written as
they settle, brought back when the photo is opened again, gone once a version is saved."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_lesionseg.core.progress import run_to_end
from napari_lesionseg.core.segment_layers import labels_to_label_map as to_label_map
from napari_lesionseg.core.session import AnnotationSession
from napari_lesionseg.core.store import Project


def _photo(small_pairs: Path, stem: str = "IDRiD_04") -> Path:
    return small_pairs / "images" / f"{stem}.jpg"


def test_a_draft_is_kept_read_back_and_dropped(tmp_path: Path, small_pairs: Path) -> None:
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(_photo(small_pairs))
    lab = np.zeros((40, 60), np.uint8)
    lab[5:9, 5:9], lab[20:22, 30:40] = 1, 255
    assert proj.draft(iid) is None
    proj.save_draft(iid, lab, None)
    d = proj.draft(iid)
    np.testing.assert_array_equal(d.label, lab)
    assert d.base_version is None and re.fullmatch(r"\d\d:\d\d on \d{4}-\d\d-\d\d", d.kept_at), d.kept_at
    assert d.edited and d.marks is None and d.types is None and d.what == "hand edits"
    proj.save_draft(iid, lab * 0, 3)  # the next replaces it
    assert proj.draft(iid).base_version == 3 and not proj.draft(iid).label.any()
    assert proj.versions(iid) == [] and proj.corrected_pairs() == []  # no version: the queue and fine-tunes never see it
    with pytest.raises(Exception, match="label values"):
        proj.save_draft(iid, np.full((4, 4), 7, np.uint8), None)
    proj.drop_draft(iid)
    assert proj.draft(iid) is None
    proj.drop_draft(iid)  # nothing to drop: no error


def test_a_draft_keeps_review_decisions_and_reviewed_types(tmp_path: Path, small_pairs: Path) -> None:
    """Review's decisions (an Accept paints nothing) and the lesion types ticked as reviewed are
    kept with the pixels, or alone; a damaged decision is passed over, said; a draft written
    before decisions were kept reads as one that says nothing of them."""
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(_photo(small_pairs))
    lab = np.zeros((40, 60), np.uint8)
    marks = {("HE", 5, 6): "accepted", ("HE", 30, 31): "unsure", ("HE", 99, 0): "deleted", ("XX", 1, 1): "accepted"}
    proj.save_draft(iid, lab, 2, edited=False, marks=marks, types={"MA", "HE"})
    d = proj.draft(iid)
    assert d.marks == {("HE", 5, 6): "accepted", ("HE", 30, 31): "unsure"}  # off the picture, unknown type: not kept
    assert d.types == ("HE", "MA") and not d.edited and d.what == "2 review decisions"
    proj.save_draft(iid, lab, 2, edited=True, marks={("HE", 5, 6): "deleted"})
    assert proj.draft(iid).what == "hand edits and 1 review decision"
    proj.save_draft(iid, lab, 2, edited=False, marks={}, types=["HE", "EX"])
    assert proj.draft(iid).what == "the lesion types ticked as reviewed" and proj.draft(iid).marks == {}
    meta = proj.root / "drafts" / f"{iid}.json"
    meta.write_text('{"base_version": 2, "shape": [40, 60], "review": [["HE", 1, 2, "accepted"], ["HE", -1, 2, "x"]]}')
    with pytest.warns(UserWarning, match=r"review decision \['HE', -1, 2, 'x'\] is not"):
        d = proj.draft(iid)
    assert d.marks == {("HE", 1, 2): "accepted"} and d.edited  # "edited" missing: an older draft, pixels
    meta.write_text('{"base_version": 2, "shape": [40, 60], "types": ["HE", "??"]}')
    with pytest.warns(UserWarning, match="unreadable draft"):
        assert proj.draft(iid) is None


def test_a_damaged_draft_is_said_and_left_alone(tmp_path: Path, small_pairs: Path) -> None:
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(_photo(small_pairs))
    proj.save_draft(iid, np.ones((10, 12), np.uint8), None)
    png, meta = proj.root / "drafts" / f"{iid}.png", proj.root / "drafts" / f"{iid}.json"
    meta.write_text('{"base_version": null, "shape": [10, 13]}')  # not the picture's shape
    with pytest.warns(UserWarning, match="unreadable draft"):
        assert proj.draft(iid) is None
    meta.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable draft"):
        assert proj.draft(iid) is None
    assert png.is_file()  # kept for a person to look at


def test_unsaved_edits_come_back_after_napari_died(tmp_path: Path, tiny_model_dir: Path, small_pairs: Path) -> None:
    session = AnnotationSession(project_dir=tmp_path / "proj", model_dir=tiny_model_dir)
    session.open_photo("a", _photo(small_pairs))
    label = session.accept_run("a", run_to_end(session.run("a"))).label
    session.store("a")  # as Segment does after a run: the photo is the project's
    iid = session.photos["a"].image_id
    session.draft_job("a", label)()  # nothing edited: no draft
    assert session.project.draft(iid) is None
    edited = label.copy()
    edited[10:20, 10:20], edited[30:34, 30:34] = 1, 255
    session.draft_job("a", edited)()
    assert session.project.draft(iid).base_version is None  # made on no saved version
    # napari killed: nothing saved; a new session opens the photo again and runs the model again
    again = AnnotationSession(project_dir=tmp_path / "proj", model_dir=tiny_model_dir)
    again.open_photo("IDRiD_04", _photo(small_pairs))
    shown, kept = again.accept_run("IDRiD_04", run_to_end(again.run("IDRiD_04")))
    np.testing.assert_array_equal(shown, to_label_map(edited))
    assert kept and again.photos["IDRiD_04"].draft_restored and again.unsaved("IDRiD_04", shown)
    # a second run replaces nothing: the edits are the layer's now, kept as edits
    shown2, kept2 = again.accept_run("IDRiD_04", run_to_end(again.run("IDRiD_04")), shown)
    np.testing.assert_array_equal(shown2, shown)
    assert kept2
    v = again.save_correction("IDRiD_04", shown, only_if_edited=True)
    assert v is not None and v.version == 1 and again.project.draft(iid) is None  # saved: the draft goes
    # edits undone back to the saved version: the draft goes too
    again.draft_job("IDRiD_04", edited * 0)()
    assert again.project.draft(iid).base_version == 1
    again.draft_job("IDRiD_04", shown)()
    assert again.project.draft(iid) is None


def test_review_decisions_alone_come_back_after_napari_died(tmp_path: Path, tiny_model_dir: Path,
                                                           small_pairs: Path) -> None:
    """A lesion accepted in Review (no pixel painted), a type ticked as reviewed, napari killed:
    the next session lists the lesion as accepted, the type as reviewed, and the correction is
    the one saved (no pixel edit shown); taking the decision back keeps that too; a save drops it."""
    session = AnnotationSession(project_dir=tmp_path / "proj", model_dir=tiny_model_dir)
    session.open_photo("a", _photo(small_pairs))
    label = session.accept_run("a", run_to_end(session.run("a"))).label
    v1 = session.save_correction("a", label)
    iid = session.photos["a"].image_id
    heard: list[str] = []
    session.decision_listeners.append(heard.append)
    session.photos["a"].review_marks[("HE", 3, 4)] = "accepted"  # as the Review dock's Accept leaves it
    session.decided("a")
    session.set_reviewed("a", ["HE", "MA"])
    assert heard == ["a", "a"]
    session.draft_job("a", label)()  # the pixels as saved: kept for the decisions
    d = session.project.draft(iid)
    assert d is not None and not d.edited and d.base_version == v1.version and d.types == ("HE", "MA")
    again = AnnotationSession(project_dir=tmp_path / "proj", model_dir=tiny_model_dir)
    photo = again.open_photo("IDRiD_04", _photo(small_pairs))
    assert photo.review_marks == {("HE", 3, 4): "accepted"} and photo.reviewed == {"HE", "MA"}
    assert photo.draft is None and photo.draft_what == "1 review decision" and photo.decided_since_saved
    np.testing.assert_array_equal(photo.saved, label)
    photo.review_marks.clear()  # the decision taken back: as saved again, nothing to keep but the tick
    again.draft_job("IDRiD_04", label)()
    assert again.project.draft(iid).marks == {}
    again.set_reviewed("IDRiD_04", ["HE"])
    again.draft_job("IDRiD_04", label)()
    assert again.project.draft(iid) is None
    photo.review_marks[("HE", 3, 4)] = "deleted"
    again.draft_job("IDRiD_04", label)()
    v2 = again.save_correction("IDRiD_04", label)
    assert again.project.draft(iid) is None and again.project.review_marks(v2) == {("HE", 3, 4): "deleted"}


def test_a_draft_older_than_the_saved_version_is_dropped(tmp_path: Path, tiny_model_dir: Path,
                                                         small_pairs: Path) -> None:
    """Edits kept as a draft on version 1, then version 2 saved elsewhere (another sitting
    that saved them, or other edits): the draft is stale and is not shown over version 2."""
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(_photo(small_pairs))
    h, w = 30, 40
    proj.save_label(iid, np.zeros((h, w), np.uint8))
    proj.save_draft(iid, np.ones((h, w), np.uint8), 1)
    proj.save_label(iid, np.full((h, w), 255, np.uint8))
    def read_only(_self: Project, _iid: str) -> None:
        raise PermissionError(13, "Permission denied")

    with pytest.MonkeyPatch.context() as mp:  # a project on a read-only share: opened all the same
        mp.setattr(Project, "drop_draft", read_only)
        photo = AnnotationSession(project_dir=proj.root, model_dir=tiny_model_dir).open_photo("p", _photo(small_pairs))
        assert photo.saved_version == 2 and photo.draft is None and proj.draft(iid) is not None
    session = AnnotationSession(project_dir=proj.root, model_dir=tiny_model_dir)
    photo = session.open_photo("p", _photo(small_pairs))
    assert photo.saved_version == 2 and photo.draft is None and proj.draft(iid) is None


def test_edits_painted_in_the_viewer_come_back_in_the_next_napari(make_napari_viewer, qtbot, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    """Painted, not saved, napari gone: the next napari with the project shows them, as unsaved edits."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lesionseg", "idrid_16")
    _, widget = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    widget.set_model_folder(tiny_model_dir)
    widget.project_edit.setText(str(tmp_path / "proj"))
    widget.run()
    qtbot.waitUntil(lambda: widget.run_button.enabled and "IDRiD_16 lesions" in viewer.layers, timeout=120_000)
    lab = viewer.layers["IDRiD_16 lesions"]
    stroke = (np.arange(300, 312).repeat(30), np.tile(np.arange(500, 530), 12))
    lab.data_setitem(stroke, 1)  # as a brush stroke records it (undoable, a paint event)
    drafts = tmp_path / "proj" / "drafts"
    qtbot.waitUntil(lambda: any(drafts.glob("*.json")) if drafts.is_dir() else False, timeout=10_000)
    lab.undo()  # back to the model's mask: nothing to keep
    qtbot.waitUntil(lambda: not any(drafts.glob("*.json")), timeout=10_000)
    lab.redo()
    qtbot.waitUntil(lambda: any(drafts.glob("*.json")), timeout=10_000)
    painted = np.asarray(lab.data).copy()
    # a new napari with the same project (the first never saved: as if it had crashed)
    viewer2 = make_napari_viewer()
    viewer2.open_sample("napari-lesionseg", "idrid_16")
    _, w2 = viewer2.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    w2.project_edit.setText(str(tmp_path / "proj"))
    back = viewer2.layers["IDRiD_16 lesions"].data
    np.testing.assert_array_equal(back, painted)
    assert "never saved" in w2.status.text() and w2.session.unsaved("IDRiD_16", back)
    w2.save_correction()
    assert not any(drafts.iterdir())  # saved as a version: the draft is gone


CRASHING_NAPARI = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication

    model, project = sys.argv[1], sys.argv[2]
    viewer = napari.Viewer(show=False)
    viewer.open_sample("napari-lesionseg", "idrid_16")
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    seg.set_model_folder(model)
    seg.project_edit.setText(project)
    app = QApplication.instance()

    def until(test, seconds):
        end = time.time() + seconds
        while not test() and time.time() < end:
            app.processEvents()
            time.sleep(0.02)
        if not test():
            sys.exit("timed out")

    seg.run()
    until(lambda: seg.run_button.enabled and "IDRiD_16 lesions" in viewer.layers, 120)
    lab = viewer.layers["IDRiD_16 lesions"]
    lab.data_setitem((np.arange(200, 220).repeat(40), np.tile(np.arange(600, 640), 20)), 1)
    lab.data_setitem((np.arange(700, 705).repeat(5), np.tile(np.arange(900, 905), 5)), 255)
    drafts = os.path.join(project, "drafts")
    until(lambda: os.path.isdir(drafts) and any(f.endswith(".json") for f in os.listdir(drafts)), 15)
    np.save(os.path.join(project, "painted.npy"), np.asarray(lab.data))
    os.kill(os.getpid(), signal.SIGKILL)  # napari dies: no close event, no save
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_napari_killed_after_painting_loses_no_edit(make_napari_viewer, qtbot, tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    """A real napari process paints and is killed; the next opens the project in Review and the
    photo comes with the edits, said, to be saved."""
    project = tmp_path / "proj"
    script = tmp_path / "crashing_napari.py"
    script.write_text(CRASHING_NAPARI)
    done = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(project)], capture_output=True,
                          text=True, timeout=300, env={**os.environ})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    painted = np.load(project / "painted.npy")
    assert not any((project / "labels").glob("*/v*.png"))  # nothing was saved as a version
    viewer = make_napari_viewer()
    _, review = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    review.project_edit.setText(str(project))
    review.project_edit.editingFinished.emit()
    review.open_next_image()
    qtbot.waitUntil(lambda: "IDRiD_16 lesions" in viewer.layers and "never saved" in review.info.text(),
                    timeout=30_000)
    np.testing.assert_array_equal(viewer.layers["IDRiD_16 lesions"].data, painted)
    assert review.session.unsaved("IDRiD_16", painted)  # edits to save, not the photo's reference
    review.save_correction()
    assert [v.version for v in Project(project).versions("IDRiD_16")] == [1]
    assert Project(project).draft("IDRiD_16") is None
