"""The Qt-free annotation session under the docks: scripted as the widgets drive it, no viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_lesionseg.core.progress import run_to_end
from napari_lesionseg.core.segment_layers import labels_to_label_map as to_label_map
from napari_lesionseg.core.session import AnnotationSession, EditsWouldBeLost


@pytest.fixture()
def session(tmp_path: Path, tiny_model_dir: Path, small_pairs: Path) -> AnnotationSession:
    s = AnnotationSession()
    s.set_project(tmp_path / "proj")
    s.set_model(tiny_model_dir)
    return s


def _photo(small_pairs: Path, stem: str = "IDRiD_04") -> Path:
    return small_pairs / "images" / f"{stem}.jpg"


def test_run_gives_progress_per_tile_and_a_mask(session: AnnotationSession, small_pairs: Path) -> None:
    session.open_photo("a", _photo(small_pairs))
    events = []
    pred = run_to_end(session.run("a"), events.append)
    assert len(events) >= 3 and events[-1].done == events[-1].total  # more than 0 -> 1
    label, kept = session.accept_run("a", pred)
    np.testing.assert_array_equal(label, pred.mask)
    assert not kept
    assert not session.is_edited("a", label)


def test_run_again_keeps_hand_edits_unless_told(session: AnnotationSession, small_pairs: Path) -> None:
    """Pressing Run again once silently deleted hand corrections."""
    session.open_photo("a", _photo(small_pairs))
    label = session.accept_run("a", run_to_end(session.run("a"))).label
    label[10:20, 10:20] = 1  # a painted lesion
    assert session.is_edited("a", label)
    again, kept = session.accept_run("a", run_to_end(session.run("a")), label)
    assert kept and (again[10:20, 10:20] == 1).all()
    replaced, kept = session.accept_run("a", session.photos["a"].prediction, label, replace_edits=True)
    assert not kept
    np.testing.assert_array_equal(replaced, session.photos["a"].prediction.mask)


def test_rethreshold_refuses_over_edits_unless_forced(session: AnnotationSession, small_pairs: Path) -> None:
    session.open_photo("a", _photo(small_pairs))
    label = session.accept_run("a", run_to_end(session.run("a"))).label
    prob = session.photos["a"].prediction.probability
    low = session.rethreshold("a", 0.2, label)
    np.testing.assert_array_equal(low, (prob > 0.2).astype(np.uint8))
    low[0, 0] = 255
    with pytest.raises(EditsWouldBeLost):
        session.rethreshold("a", 0.3, low)
    forced = session.rethreshold("a", 0.3, low, force=True)
    np.testing.assert_array_equal(forced, (prob > 0.3).astype(np.uint8))


def test_saves_only_real_edits_and_reopening_brings_them_back(session: AnnotationSession, small_pairs: Path,
                                                               tmp_path: Path) -> None:
    """Spurious saves (an unchanged layer saved again on every switch) and corrections not
    coming back on reopening were both reported."""
    session.open_photo("a", _photo(small_pairs))
    label = session.accept_run("a", run_to_end(session.run("a"))).label
    assert session.save_correction("a", label, only_if_edited=True) is None  # nothing to save
    label = np.zeros_like(label)
    label[5:9, 5:9] = 255  # only "unsure": must come back as unsure, not as lesion
    v = session.save_correction("a", label, only_if_edited=True)
    assert v is not None and v.version == 1
    assert session.save_correction("a", label, only_if_edited=True) is None
    proj = session.project
    assert [r["version"] for r in proj.manifest()] == [1]
    # a new session (napari restarted), the same photo opened again
    again = AnnotationSession(project_dir=tmp_path / "proj", model_dir=session.model_dir)
    photo = again.open_photo("IDRiD_04", _photo(small_pairs))
    np.testing.assert_array_equal(photo.saved, label)
    assert not again.is_edited("IDRiD_04", label)
    # a run does not replace the saved correction
    shown = again.accept_run("IDRiD_04", run_to_end(again.run("IDRiD_04")), label).label
    np.testing.assert_array_equal(shown, label)


def test_review_decisions_alone_are_saved_and_come_back(session: AnnotationSession, small_pairs: Path,
                                                       tmp_path: Path) -> None:
    """Accepting a lesion in Review paints nothing, nor does ticking a lesion type as checked: a
    save "only if edited" (switching photos, closing napari) kept no trace of either, and napari
    restarted listed the accepted lesion as undecided again."""
    session.open_photo("a", _photo(small_pairs))
    label = session.accept_run("a", run_to_end(session.run("a"))).label
    assert not session.unsaved("a", label)
    session.photos["a"].review_marks[("HE", 5, 6)] = "accepted"
    assert session.unsaved("a", label) and not session.is_edited("a", label)
    v = session.save_correction("a", label, only_if_edited=True)
    assert v is not None and not session.unsaved("a", label)
    assert session.save_correction("a", label, only_if_edited=True) is None  # saved once
    session.set_reviewed("a", ["HE", "EX"])  # exudates checked, none found: a decision too
    assert session.unsaved("a", label)
    v = session.save_correction("a", label, only_if_edited=True)
    assert v is not None and session.project.label_types(v) == ("HE", "EX")
    session.set_reviewed("a", ["HE"])
    photo = session.photos["a"]
    photo.auto_mask[:3, :3] = 2  # the model's microaneurysm (the five-output model's value)
    label[:3, :3] = 2
    photo.saved = None  # measured against the model's mask again
    photo.review_marks[("MA", 1, 1)] = "accepted"  # decided on, nothing painted, the box not ticked
    v = session.save_correction("a", label, only_if_edited=True)
    assert session.project.label_types(v) == ("HE", "MA")  # as a Delete (pixels changed) says it
    session.set_reviewed("a", [])  # every box unticked: nothing a correction could be saved as
    assert not session.unsaved("a", label) and session.save_correction("a", label, only_if_edited=True) is None
    again = AnnotationSession(project_dir=tmp_path / "proj", model_dir=session.model_dir)
    photo = again.open_photo("IDRiD_04", _photo(small_pairs))
    assert photo.review_marks == {("HE", 5, 6): "accepted", ("MA", 1, 1): "accepted"}
    assert not again.unsaved("IDRiD_04", label)


def test_switching_projects_saves_into_the_new_one_by_content(session: AnnotationSession, small_pairs: Path,
                                                              tmp_path: Path) -> None:
    """After the project folder changed, a photo kept the old project's id: its correction was
    saved onto whichever photo held that id in the new project (another camera's IMG_0001.JPG),
    or refused ("no image with id 'IDRiD_04'; add it first") in a new project."""
    import shutil

    from napari_lesionseg.core.store import Project

    session.open_photo("IDRiD_04", _photo(small_pairs))
    label = session.accept_run("IDRiD_04", run_to_end(session.run("IDRiD_04"))).label
    label[10:20, 10:20] = 1
    session.save_correction("IDRiD_04", label)  # in proj
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(_photo(small_pairs, "IDRiD_16"), other / "IDRiD_04.jpg")  # another photo, the same name
    b = Project(tmp_path / "b")
    assert b.add_image(other / "IDRiD_04.jpg") == "IDRiD_04"
    session.set_project(b.root)
    assert not session.unsaved("IDRiD_04", label)  # what was shown is no edit in the new project
    assert session.save_correction("IDRiD_04", label, only_if_edited=True) is None
    label[30:40, 30:40] = 1
    v = session.save_correction("IDRiD_04", label, only_if_edited=True)
    assert v is not None and v.image_id == "IDRiD_04-2" and b.versions("IDRiD_04") == []
    assert b.image_sha256("IDRiD_04-2") == Project(tmp_path / "proj").image_sha256("IDRiD_04")
    session.set_project(tmp_path / "c")  # a new project: the photo is added to it
    v = session.save_correction("IDRiD_04", label)
    assert v is not None and v.image_id == "IDRiD_04" and Project(tmp_path / "c").image_ids() == ["IDRiD_04"]
    session.set_project(tmp_path / "proj")  # back: that project's own correction is what is saved
    assert session.photos["IDRiD_04"].saved_version == 1 and session.is_edited("IDRiD_04", label)
    d = Project(tmp_path / "d")
    v = d.save_label(d.add_image(_photo(small_pairs)), label, types=("HE", "MA"))
    v.path.with_suffix(".json").write_text("{")  # damaged: said where it matters (Save, Open), not here
    session.set_project(d.root)  # it raised out of the project field's handler, the docks not told
    assert session.project_dir == d.root


def test_a_photo_without_a_file_is_corrected_saved_and_brought_back(session: AnnotationSession, small_pairs: Path,
                                                                    tmp_path: Path) -> None:
    """A layer with no file our reader decodes (made in memory, or read by another plugin):
    "has no source file; open the photo from disk" refused its correction. Its pixels are
    kept in the project, with its prediction, and bring the correction back."""
    from napari_lesionseg.core.image_io import read_image

    rgb = read_image(_photo(small_pairs))[0]
    asked = []
    session.open_photo("scan", None, pixels=lambda: asked.append(1) or rgb)
    session.open_photo("scan", None, pixels=lambda: asked.append(1) or rgb)
    assert len(asked) == 1  # the pixels are asked for once
    label = session.accept_run("scan", run_to_end(session.run("scan"))).label.copy()
    assert session.store("scan") is not None
    label[5:9, 5:9] = 1
    v = session.save_correction("scan", label)
    assert v is not None and v.image_id == "scan"
    proj = session.project
    assert proj.image_ids() == ["scan"] and proj.prediction_settings("scan")
    again = AnnotationSession(project_dir=tmp_path / "proj", model_dir=session.model_dir)
    np.testing.assert_array_equal(again.open_photo("scan", None, pixels=lambda: rgb.copy()).saved, label)
    other = AnnotationSession(project_dir=tmp_path / "proj", model_dir=session.model_dir)
    assert other.open_photo("scan", None, pixels=lambda: rgb[::-1].copy()).saved is None  # other pixels


def test_layer_data_is_copied_not_aliased(session: AnnotationSession, small_pairs: Path) -> None:
    """napari paints into the layer's array in place: the session must keep its own copy."""
    session.open_photo("a", _photo(small_pairs))
    layer_data = session.accept_run("a", run_to_end(session.run("a"))).label
    session.save_correction("a", layer_data)
    layer_data[0:3, 0:3] = 1  # painted after saving
    assert session.is_edited("a", layer_data)


def test_next_image_follows_uncertainty_and_model_follows_promotion(session: AnnotationSession,
                                                                    small_pairs: Path, tmp_path: Path) -> None:
    for stem in ("IDRiD_04", "IDRiD_16"):
        session.open_photo(stem, _photo(small_pairs, stem))
        session.accept_run(stem, run_to_end(session.run(stem)))
        assert session.store(stem) is not None
    first, place, count, uncorrected, _resumed = session.next_image()
    assert first in ("IDRiD_04", "IDRiD_16") and (place, count, uncorrected) == (1, 2, 2)
    second, place, *_ = session.next_image(first)
    assert second != first and place == 2
    assert session.next_image(second)[0] == first  # wraps round
    # the model is the project's active version, asked for each time (no stale model after Promote)
    s2 = AnnotationSession(project_dir=tmp_path / "proj2")
    from napari_lesionseg.core.bundled import default_model_dir

    assert s2.model_path() == default_model_dir()


def test_to_label_map() -> None:
    data = np.array([[0, 1, 2], [255, 7, 0]], np.int32)
    np.testing.assert_array_equal(to_label_map(data), [[0, 1, 1], [255, 1, 0]])
    # a uint8 layer (the docks' own) goes through a lookup table: the same map for every value
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for types in (["HE"], ["HE", "MA", "EX", "SE"], ["HE", "EX"]):
        kept = [0, 255] + [{"HE": 1, "MA": 2, "EX": 3, "SE": 4}[t] for t in types]
        out = to_label_map(every, types)
        assert out.dtype == np.uint8 and out is not every
        np.testing.assert_array_equal(out, np.where(np.isin(every, kept), every, 1))


def test_a_project_under_home_is_found_not_made_beside(tmp_path: Path, monkeypatch) -> None:
    """A project folder typed as ~/proj became a folder named '~' in napari's working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    s = AnnotationSession()
    s.set_project("~/proj")
    assert s.project is not None and s.project.root == tmp_path / "home" / "proj"
    assert not (tmp_path / "~").exists()


def test_other_lesion_types_survive_a_session_on_a_hemorrhage_model(session: AnnotationSession,
                                                                     small_pairs: Path) -> None:
    """A photo segmented with the five-output model (stored in the project, by the dock or by
    ``predict --project``), then opened while the dock's model is a hemorrhage-only one: its
    microaneurysms, exudates and soft exudates (values 2-4) were saved as hemorrhages, and the
    untouched map counted as edited, so switching photos saved that corrupted map unasked."""
    proj = session.project
    assert proj is not None and session.lesion_types() == ["HE"]
    iid = proj.add_image(_photo(small_pairs))
    h, w = np.asarray(__import__("PIL.Image").Image.open(_photo(small_pairs))).shape[:2]
    shown = np.zeros((h, w), np.uint8)
    shown[10:20, 10:20], shown[30:40, 30:40], shown[50:60, 50:60], shown[70:80, 70:80] = 1, 2, 3, 4
    empty = np.zeros((h, w), np.float32)
    proj.save_prediction(iid, "multi-x", empty, shown == 1, empty, {},
                         {t: (empty, (shown == v).astype(np.uint8), 0.5) for t, v in (("MA", 2), ("EX", 3), ("SE", 4))})
    session.open_photo(iid, proj.image_path(iid))
    session.shown(iid, shown)
    assert not session.is_edited(iid, shown.copy())
    assert session.save_correction(iid, shown.copy(), only_if_edited=True) is None
    edited = shown.copy()
    edited[90:95, 90:95] = 1
    v = session.save_correction(iid, edited, only_if_edited=True)
    assert v is not None
    np.testing.assert_array_equal(proj.latest_label(iid), edited)
    # brought back in a new session on the same hemorrhage model: still not edited, still every type
    again = AnnotationSession()
    again.set_project(proj.root)
    again.set_model(session.model_dir)
    again.open_photo(iid, proj.image_path(iid))
    assert not again.is_edited(iid, edited.copy())
    # a label value no type has (napari's "new label" on a hemorrhage model) is still a hemorrhage
    odd = edited.copy()
    odd[100:105, 100:105] = 7
    again.save_correction(iid, odd)
    saved = proj.latest_label(iid)
    assert (saved[100:105, 100:105] == 1).all() and (saved[30:40, 30:40] == 2).all()


def _three_photo_queue(tmp_path: Path, small_pairs: Path):
    """A project of three photos kept as pixels, 'a' the most uncertain, then 'b', then 'c'
    (their stored fuzzy maps), none corrected; and the RGB they were made from."""
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    rgb = read_image(_photo(small_pairs))[0]
    h, w = rgb.shape[:2]
    for k, name in enumerate(("c", "b", "a")):
        iid = proj.add_pixels(np.roll(rgb, k, axis=1), name)
        fuzzy = np.zeros((h, w), np.float32)
        fuzzy[: 20 * (k + 1)] = 1.0
        proj.save_prediction(iid, "m1", np.full((h, w), 0.1, np.float32), np.zeros((h, w), np.uint8), fuzzy)
    return proj, rgb


def test_the_queue_passes_over_photos_already_corrected(tmp_path: Path, small_pairs: Path) -> None:
    """A batch reviewed over several days opened each day at the most uncertain photo, corrected
    the day before, and Open next image walked every corrected photo again."""
    proj, rgb = _three_photo_queue(tmp_path, small_pairs)
    h, w = rgb.shape[:2]
    session = AnnotationSession(project_dir=proj.root)
    assert session.next_image() == ("a", 1, 3, 3, False)
    proj.save_label("a", np.zeros((h, w), np.uint8))  # corrected yesterday
    session = AnnotationSession(project_dir=proj.root)
    assert session.next_image() == ("b", 2, 3, 2, False)  # today's first photo is the first not corrected
    assert session.next_image("b") == ("c", 3, 3, 2, False)
    assert session.next_image("c")[0] == "b"  # round the ones without a correction, not through a
    assert session.next_image("c", skip={"b"})[0] == "a"  # none other left: every photo again
    proj.save_label("b", np.zeros((h, w), np.uint8))
    proj.save_label("c", np.zeros((h, w), np.uint8))
    assert session.next_image("a") == ("b", 2, 3, 0, False)  # all corrected: the plain order


def test_a_review_resumes_at_the_photo_it_opened_last(tmp_path: Path, small_pairs: Path) -> None:
    """A photo left half-reviewed had its edits saved on closing napari, and so counted as
    corrected: the next day's review started elsewhere and passed over it until every other
    photo was done."""
    from napari_lesionseg.core.store import RESUME

    proj, rgb = _three_photo_queue(tmp_path, small_pairs)
    h, w = rgb.shape[:2]
    day1 = AnnotationSession(project_dir=proj.root)
    assert day1.next_image() == ("a", 1, 3, 3, False)
    day1.open_photo("a", pixels=lambda: np.roll(rgb, 2, axis=1))
    half = np.zeros((h, w), np.uint8)
    half[5:9, 5:9] = 1
    day1.photos["a"].auto_mask = np.zeros((h, w), np.uint8)
    assert day1.save_correction("a", half, only_if_edited=True) is not None  # saved as napari closes
    proj.set_resume(["a", "not a project photo"])  # as Open next image remembers the photo it opened
    day2 = AnnotationSession(project_dir=proj.root)
    assert day2.next_image() == ("a", 1, 3, 2, True)  # where the review stood, corrected or not
    assert day2.next_image("a") == ("b", 2, 3, 2, False)  # then on as before
    assert day2.next_image() == ("b", 2, 3, 2, False)  # once: a photo closed by hand is not opened again
    day2.set_project(tmp_path / "other")
    day2.set_project(proj.root)
    assert day2.next_image() == ("a", 1, 3, 2, True)  # a project set again resumes again
    assert AnnotationSession(project_dir=proj.root).next_image(skip={"a"}) == ("b", 2, 3, 2, False)  # unreadable
    for damaged in ("{", '{"open": "a"}', '[1]'):
        (proj.root / RESUME).write_text(damaged)
        assert AnnotationSession(project_dir=proj.root).next_image() == ("b", 2, 3, 2, False)  # no error


def test_edits_on_a_stored_prediction_count_without_being_told_what_was_shown(tmp_path: Path,
                                                                               small_pairs: Path) -> None:
    """A photo the project segmented, shown with its stored mask by another way than Open next
    image (which says what it showed): edits made on that mask counted as none, so switching
    away or closing napari did not keep them; the unchanged mask is still no edit."""
    from helpers import project_with_predictions
    from napari_lesionseg.core.segment_layers import stored_label_map

    proj = project_with_predictions(tmp_path / "proj", small_pairs / "images")
    iid = proj.image_ids()[0]
    session = AnnotationSession(project_dir=proj.root)
    session.open_photo(iid, proj.image_path(iid))
    shown = stored_label_map(proj, iid)
    assert not session.is_edited(iid, shown)
    assert session.save_correction(iid, shown, only_if_edited=True) is None
    edited = shown.copy()
    edited[10:20, 10:20] = 1
    assert session.is_edited(iid, edited)
    v = session.save_correction(iid, edited, only_if_edited=True)
    assert v is not None and proj.label_types(v) == ("HE",)  # the type touched counts as reviewed
    np.testing.assert_array_equal(proj.latest_label(iid), edited)
