"""Review: regions sorted by uncertainty (core) and the "Review lesions" widget in a viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesionseg.core.review import review_regions


def _scene():
    mask = np.zeros((300, 400), np.uint8)
    prob = np.zeros((300, 400), np.float32)
    fuzzy = np.zeros((300, 400), np.float32)
    mask[50:60, 50:60] = 1  # a confident lesion
    prob[50:60, 50:60] = 0.95
    mask[100:160, 200:290] = 1  # an unsure lesion
    prob[100:160, 200:290] = 0.55
    fuzzy[100:160, 200:290] = 0.9
    fuzzy[250:260, 300:320] = 0.7  # fuzzy, not in the mask
    prob[250:260, 300:320] = 0.4
    return mask, prob, fuzzy


def test_regions_sorted_by_uncertainty() -> None:
    rs = review_regions(*_scene())
    kinds = [(r.kind, r.area_px) for r in rs.regions]
    assert kinds == [("lesion", 5400), ("fuzzy", 200), ("lesion", 100)]
    top = rs.regions[0]
    assert top.bbox == (100, 200, 160, 290) and top.mean_prob == pytest.approx(0.55)
    assert rs.pixels(rs.regions[1]).sum() == 200


def _scene_in_review(make_napari_viewer):
    """A viewer with the test scene's layers, as Segment would add them, and the Review dock."""
    from napari_lesionseg.core.inference import Prediction
    from napari_lesionseg.core.segment_layers import prediction_layers

    viewer = make_napari_viewer()
    mask, prob, fuzzy = _scene()
    pred = Prediction(prob, mask, fuzzy, np.zeros_like(mask, np.int32), [], None, "m1", 0.5)  # type: ignore[arg-type]
    for data, kwargs, kind in prediction_layers("photo", pred):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    return viewer, w


@pytest.mark.gui
def test_review_widget_walks_and_edits(make_napari_viewer) -> None:
    from napari_lesionseg._qt.review import camera
    viewer, w = _scene_in_review(make_napari_viewer)
    assert w.image_picker.name == "photo"
    w.refresh()
    assert w.table.rowCount() == 3 and w.table.item(0, 0).text() == "lesion"
    r = w.next()
    assert r.area_px == 5400
    np.testing.assert_allclose(camera(viewer).center[-2:], (129.5, 244.5))
    zoom_big = camera(viewer).zoom
    w.mark_unsure()
    lab = viewer.layers["photo lesions"].data
    assert (lab[100:160, 200:290] == 255).all() and w.table.item(0, 4).text() == "unsure"
    w.next()
    w.accept()  # the uncovered fuzzy region becomes a lesion
    assert (viewer.layers["photo lesions"].data[250:260, 300:320] == 1).all()
    w.next()
    assert camera(viewer).zoom > zoom_big  # a smaller region is shown closer
    w.delete()
    assert (viewer.layers["photo lesions"].data[50:60, 50:60] == 0).all()
    w.next()  # wraps around
    assert w.current == 0
    w.previous()
    assert w.current == 2
    visible = viewer.layers["photo fuzzy"].visible
    w.toggle_fuzzy()
    assert viewer.layers["photo fuzzy"].visible is not visible
    assert len(viewer.layers["photo current region"].data) == 1
    w.refresh()  # a new list, no region current: the frame goes (it stayed, framing the region before)
    assert w.current == -1 and len(viewer.layers["photo current region"].data) == 0
    w.next()
    assert w.current == 0 and len(viewer.layers["photo current region"].data) == 1


def _faint_blobs_in_review(make_napari_viewer, missed_top: float):
    """A viewer with one lesion and 25 ever fainter blobs (each a possible miss) segmented by a
    model whose rates make a blob's chance of being a missed lesion ``2 * missed_top`` times its
    highest probability; the Review dock beside it."""
    from napari_lesionseg.core.inference import Prediction
    from napari_lesionseg.core.model_config import ReviewConfig
    from napari_lesionseg.core.segment_layers import prediction_layers

    prob = np.zeros((400, 400), np.float32)
    mask = np.zeros((400, 400), np.uint8)
    mask[10:30, 10:30], prob[10:30, 10:30] = 1, 0.9  # one lesion
    for k in range(25):  # 25 faint blobs, each a possible miss, fainter and fainter
        y, x = 50 + 60 * (k // 6), 40 + 60 * (k % 6)
        prob[y:y + 10, x:x + 10] = 0.4 - 0.01 * k
    review = ReviewConfig(missed_rate=[[0.0, 0.5], [0.0, missed_top]], false_alarm_rate=[[0.5, 1.0], [0.3, 0.1]])
    viewer = make_napari_viewer()
    pred = Prediction(prob, mask, np.zeros_like(prob), np.zeros_like(mask, np.int32), [], None,  # type: ignore[arg-type]
                      "m1", 0.5, review=review)
    for data, kwargs, kind in prediction_layers("photo", pred):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    return viewer, w


@pytest.mark.gui
def test_decisions_outlive_a_new_list_and_a_photo_switch(make_napari_viewer) -> None:
    """Accept on a lesion paints nothing: a new list (Refresh, a replaced mask, another photo
    chosen and this one again) listed the accepted lesion at the top again as a likely false
    alarm, and every row's status went. A decision holds while its pixels hold what it left."""
    viewer, w = _faint_blobs_in_review(make_napari_viewer, 0.1)
    _segmented(viewer, "other", [(10, 10)])
    w.hide_below.value = 0.0
    first = w.refresh()
    assert first is not None and first.regions[0].kind == "lesion"
    w.go(0)
    w.accept()  # the lesion is right
    w.go(1)
    w.mark_unsure()  # the likeliest blob
    w.go(2)
    w.accept()  # the next blob is a lesion the mask missed
    w.go(3)
    w.delete()  # and the next is nothing: deleting a possible miss paints 0 where 0 was
    said = {r.bbox: w.table.item(i, 4).text() for i, r in enumerate(w.review.regions) if w.table.item(i, 4).text()}
    assert sorted(said.values()) == ["accepted", "accepted", "deleted", "unsure"]
    for again in (w.refresh, lambda: (w.image_picker.choose("other"), w.image_picker.choose("photo"))):
        again()
        now = {r.bbox: w.table.item(i, 4).text() for i, r in enumerate(w.review.regions) if w.table.item(i, 4).text()}
        assert now == said, now
        assert w.review.regions[0].kind == "fuzzy" and not w.review.regions[0].decided  # a blob left to look at
        assert all(r.decided for r in w.review.regions if r.bbox in said)  # listed last
    lab = viewer.layers["photo lesions"]
    lab.data[10:30, 10:30] = 7  # the accepted lesion painted over with napari's "new label": still a lesion
    w.refresh()
    assert {r.bbox: w.table.item(i, 4).text() for i, r in enumerate(w.review.regions)
            if w.table.item(i, 4).text()} == said
    lab.data[10:30, 10:30] = 1
    viewer.layers["photo lesions"].undo()  # napari's own Undo of the last change: the blob accepted
    w.refresh()
    now = {r.bbox: w.table.item(i, 4).text() for i, r in enumerate(w.review.regions) if w.table.item(i, 4).text()}
    assert now == {b: t for b, t in said.items() if b != (50, 100, 60, 110)}, now
    assert sorted(now.values()) == ["accepted", "deleted", "unsure"]  # the lesion's, the two other blobs'


@pytest.mark.gui
def test_another_photos_mask_replaced_leaves_the_review_as_it_is(make_napari_viewer) -> None:
    """Review listed photo a, then b; a's mask replaced (Segment's run on it ending) emptied
    b's list and took b's Undo history and place in the list with it: the old photo's mask was
    still followed (by a weak reference to napari's proxy layer, gone at once: never let go)."""
    viewer = make_napari_viewer()
    _segmented(viewer, "a", [(10, 10)])
    _segmented(viewer, "b", [(10, 10), (100, 100)])
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.image_picker.choose("a")
    w.image_picker.choose("b")
    w.hide_below.value = 0
    w.go(1)
    w.delete()
    viewer.layers["a lesions"].data = np.zeros((300, 300), np.uint8)
    assert w.table.rowCount() == 2 and w.current == 1 and len(w._undo) == 1
    viewer.layers["b lesions"].data = np.zeros((300, 300), np.uint8)  # its own: listed again
    assert w.table.rowCount() == 0 and w._undo == []


@pytest.mark.gui
def test_the_status_column_is_in_view_in_a_dock_opened_alone(make_napari_viewer, qtbot) -> None:
    """Opened alone (not tabbed beside Segment), the dock was narrower than its table: the
    status column, where Accept, Delete and Mark unsure show, lay behind a horizontal scroll bar."""
    viewer, w = _faint_blobs_in_review(lambda: make_napari_viewer(show=True), 0.1)
    viewer.window._qt_window.resize(1600, 1000)
    w.hide_below.value = 0.0
    w.refresh()
    w.go(1)
    w.mark_unsure()
    assert w.table.item(1, 4).text() == "unsure"
    qtbot.waitUntil(lambda: w.table.horizontalScrollBar().maximum() == 0, timeout=5_000)  # the layout settles later
    rect = w.table.visualItemRect(w.table.item(1, 4))
    assert w.table.viewport().rect().contains(rect)


@pytest.mark.gui
def test_review_dock_says_how_many_mistakes_the_rates_expect(make_napari_viewer) -> None:
    """A long list (here 26 regions) is daunting; with the model's rates the dock says how many of
    them are likely mistakes and how many of those the first 20 rows hold; without rates (scores
    that are no chances) or with a short list it says nothing of the kind."""
    from napari_lesionseg._qt.review import COLUMNS
    from napari_lesionseg.core.review_metrics import QUEUE_FIRST

    viewer, w = _faint_blobs_in_review(make_napari_viewer, 0.5)
    rs = w.refresh()
    assert rs is not None and rs.rated and len(rs.regions) == 26 and not rs.hidden
    total, first = rs.expected_mistakes(), rs.expected_mistakes(QUEUE_FIRST)
    assert first is not None and total is not None and first < total
    assert (f"about {total:.0f} of the listed regions are likely mistakes, {first:.0f} of them in the first "
            f"{QUEUE_FIRST} rows") in w.info.text()
    assert "not listed" not in w.info.text()
    score_header = w.table.horizontalHeaderItem(COLUMNS.index("score"))
    assert score_header.text() == "p(wrong)" and "false alarm" in score_header.toolTip()
    viewer.layers["photo probability"].metadata.pop("review", None)  # a layer without the model's rates
    w.refresh()
    assert "25 possible missed lesion(s)" in w.info.text() and "likely mistakes" not in w.info.text()
    # the column then holds fuzziness, and says so: not a chance
    assert w.table.horizontalHeaderItem(COLUMNS.index("score")).text() == "fuzziness"


@pytest.mark.gui
def test_unlikely_regions_are_counted_not_listed(make_napari_viewer) -> None:
    """A photo can have 150 faint possible misses, each a few per cent likely to be a lesion:
    the dock lists the regions at or above its 'list p(wrong) from' setting (0.05) and says how
    many it leaves out and how many mistakes the rates expect among them; 0 lists them all, and
    what was done to a region stays with it when the list changes."""
    from napari_lesionseg.core.review import HIDE_BELOW

    viewer, w = _faint_blobs_in_review(make_napari_viewer, 0.1)  # blob k: chance 0.2 * (0.4 - 0.01 k)
    rs = w.refresh()
    assert w.hide_below.value == HIDE_BELOW == 0.05 and not w.hide_row.native.isHidden()
    chances = [0.2 * (0.4 - 0.01 * k) for k in range(25)]
    listed = sum(c >= 0.05 for c in chances)
    assert rs is not None and len(rs.regions) == 1 + listed and len(rs.hidden) == 25 - listed == 9
    assert w.table.rowCount() == 1 + listed and all(r.score >= 0.05 for r in rs.regions)
    hidden = sum(c for c in chances if c < 0.05)
    assert rs.expected_hidden() == pytest.approx(hidden, rel=1e-3)
    assert "25 possible missed lesion(s)" in w.info.text()
    assert f"9 less likely than 0.05 not listed (about {hidden:.1f} mistakes among them)" in w.info.text()
    assert f"about {sum(r.score for r in rs.regions):.1f} of the 17 listed are likely mistakes" in w.info.text()
    w.next()
    w.delete()  # the lesion (first: 0.14 against the likeliest blob's 0.08)
    assert w.table.item(0, 4).text() == "deleted"
    w.hide_below.value = 0.0
    assert w.table.rowCount() == 26 and "not listed" not in w.info.text()
    assert w.table.item(0, 4).text() == "deleted"  # the status went with its region
    w.hide_below.value = 0.3  # above every chance: nothing listed, and Next does nothing
    assert w.table.rowCount() == 0 and w.next() is None and "26 less likely than 0.30" in w.info.text()
    w.hide_below.value = 0.05
    w.undo()
    assert w.table.item(0, 4).text() == ""
    viewer.layers["photo probability"].metadata.pop("review", None)  # no rates: nothing can be set aside
    w.refresh()
    assert w.table.rowCount() == 26 and w.hide_row.native.isHidden()


def test_a_review_set_cut_by_chance_keeps_its_order() -> None:
    """``ReviewSet.cut`` sets aside the regions under a chance and brings them back at 0, in the
    list's order (specks last); a set without rates is never cut."""
    from napari_lesionseg.core.model_config import ReviewConfig

    mask, prob, fuzzy = _scene()
    review = ReviewConfig(missed_rate=[[0.0, 1.0], [0.0, 0.4]], false_alarm_rate=[[0.0, 1.0], [0.9, 0.1]])
    whole = review_regions(mask, prob, fuzzy, threshold=0.5, review=review)
    assert whole.rated and len(whole.regions) >= 3
    below = sorted(r.score for r in whole.regions)[1] + 1e-6  # sets aside the two least likely
    cut = whole.cut(below)
    assert len(cut.hidden) == 2 and cut.regions == [r for r in whole.regions if r.score >= below]
    assert cut.expected_hidden() == pytest.approx(sum(r.score for r in cut.hidden))
    assert cut.cut(0.0).regions == whole.regions and not cut.cut(0.0).hidden
    unrated = review_regions(mask, prob, fuzzy)
    assert unrated.cut(0.99).regions == unrated.regions and unrated.expected_hidden() is None


@pytest.mark.gui
@pytest.mark.smoke
def test_step_through_project_images_by_uncertainty(make_napari_viewer, qtbot, tmp_path, small_pairs) -> None:
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    fuzz = {}
    for k, img in enumerate(sorted((small_pairs / "images").iterdir())):
        iid = proj.add_image(img)
        from PIL import Image

        w, h = Image.open(img).size
        prob = np.full((h, w), 0.1, np.float32)
        mask = np.zeros((h, w), np.uint8)
        mask[50:60, 50:60] = 1
        fuzzy = np.zeros((h, w), np.float32)
        fuzzy[: 20 * (k + 1)] = 1.0  # the second image is the more uncertain one
        proj.save_prediction(iid, "m1", prob, mask, fuzzy)
        fuzz[iid] = k
    assert [i for i, _ in proj.images_by_uncertainty()] == ["IDRiD_16", "IDRiD_04"]
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, w) == "IDRiD_16"
    names = [ly.name for ly in viewer.layers]
    assert names == ["IDRiD_16", "IDRiD_16 probability", "IDRiD_16 fuzzy", "IDRiD_16 lesions"]
    lab = viewer.layers["IDRiD_16 lesions"]
    lab.data[100:110, 100:110] = 1
    lab.refresh()
    assert w.go(0) is not None and "IDRiD_16 current region" in viewer.layers  # the review's frame
    assert _open_next(qtbot, w) == "IDRiD_04"  # leaving IDRiD_16 keeps its edit
    assert proj.latest("IDRiD_16").version == 1
    assert [ly.name for ly in viewer.layers][0] == "IDRiD_04"
    assert not [ly.name for ly in viewer.layers if ly.name.startswith("IDRiD_16")]  # its frame went too
    assert _open_next(qtbot, w) == "IDRiD_16"  # wraps; the correction is what comes back
    assert (viewer.layers["IDRiD_16 lesions"].data[100:110, 100:110] == 1).all()
    assert proj.latest("IDRiD_04") is None  # an unedited image gets no version


def _open_next(qtbot, w) -> str | None:
    """Press *Open next image* and wait until the image is shown (its layers come one per turn
    of the event loop, and the button is given back at the end)."""
    got = w.open_next_image()
    qtbot.waitUntil(lambda: not w.turns.busy and w.next_image_button.enabled, timeout=30_000)
    return got


@pytest.mark.gui
def test_closing_review_drops_its_key_bindings(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    n_bound = len(viewer.keymap)
    assert n_bound >= 3
    viewer.window.remove_dock_widget(w)
    assert len(viewer.keymap) == n_bound - 3
    viewer.add_image(np.zeros((8, 8), np.uint8))  # the closed dock no longer follows the layer list
    assert w.image_picker.names == []


@pytest.mark.gui
def test_a_reopened_segment_dock_keeps_the_results(make_napari_viewer, qtbot, tiny_model_dir) -> None:
    """A reopened Segment dock once lost its results and its slider silently did nothing."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lesionseg", "idrid_16")
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    w.set_model_folder(tiny_model_dir)
    w.run()
    qtbot.waitUntil(lambda: w.run_button.enabled and "lesion(s)" in w.status.text(), timeout=120_000)
    viewer.window.remove_dock_widget(w)
    _, w2 = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    w2.set_model_folder(tiny_model_dir)
    assert "IDRiD_16" in w2.results
    w2.threshold.value = 0.1
    prob = w2.results["IDRiD_16"].probability
    np.testing.assert_array_equal(viewer.layers["IDRiD_16 lesions"].data, (prob > 0.1).astype(np.uint8))


@pytest.mark.gui
def test_open_next_image_never_duplicates_and_docks_share_the_project(make_napari_viewer, qtbot, tmp_path,
                                                                      small_pairs) -> None:
    """"Open next image" once opened an image already shown a second time ("IDRiD_04 [1]"); the
    project folder had to be typed into every dock."""
    from napari_lesionseg.core.bundled import sample_paths
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    iid = proj.add_image(sample_paths("idrid_04")[0])
    from PIL import Image

    w, h = Image.open(sample_paths("idrid_04")[0]).size
    proj.save_prediction(iid, "m1", np.full((h, w), 0.1, np.float32), np.zeros((h, w), np.uint8),
                         np.ones((h, w), np.float32))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lesionseg", "idrid_04")
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    _, ft = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Fine-tune model")
    seg.project_edit.setText(str(proj.root))
    assert rev.project_edit.text() == ft.project_edit.text() == str(proj.root)
    assert _open_next(qtbot, rev) == "IDRiD_04"
    names = [ly.name for ly in viewer.layers]
    assert names.count("IDRiD_04") == 1 and not any("[" in n for n in names), names


@pytest.mark.gui
def test_stepping_through_photos_without_predictions_closes_each(make_napari_viewer, qtbot, tmp_path,
                                                                small_pairs) -> None:
    """A project photo with no stored prediction has no lesions layer: Open next image never
    closed it (each click kept another full-size photo open) nor said why there was nothing
    to review."""
    from napari_lesionseg.core.image_io import read_mask
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    for img in sorted((small_pairs / "images").iterdir()):
        proj.add_image(img)
    proj.save_label("IDRiD_04", read_mask(small_pairs / "masks" / "IDRiD_04_HE.png"))  # corrected, not predicted
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))
    shown = []
    for _ in range(4):
        shown.append(_open_next(qtbot, w))
        names = [ly.name for ly in viewer.layers]
        photos = [n for n in names if not n.endswith((" lesions", " current region", " disc and macula"))]
        assert photos == [shown[-1]], photos  # one photo open at a time
        assert [n for n in names if n.endswith(" disc and macula")] == []  # the photo before's outlines went too
        viewer.add_shapes(name=f"{shown[-1]} disc and macula", metadata={"lesionseg": True})  # as Segment draws them
    assert set(shown) == {"IDRiD_04", "IDRiD_16"}
    if shown[-1] == "IDRiD_16":
        _open_next(qtbot, w)
    _open_next(qtbot, w)  # to IDRiD_16: no prediction, no lesions layer
    assert "no prediction stored" in w.info.text() and "Segment lesions" in w.info.text()


@pytest.mark.gui
def test_review_actions_can_be_undone_and_the_region_is_framed(make_napari_viewer) -> None:
    """Accept / Delete / Mark unsure could not be undone; the current region was not shown."""
    viewer, w = _scene_in_review(make_napari_viewer)
    w.refresh()
    before = viewer.layers["photo lesions"].data.copy()
    w.next()
    frame = viewer.layers["photo current region"]
    y0, x0, y1, x1 = w.region().bbox
    corners = frame.data[0]
    assert corners[:, 0].min() < y0 and corners[:, 0].max() > y1 and corners[:, 1].min() < x0
    assert viewer.layers.selection.active.name == "photo lesions"  # painting still goes to the mask
    w.delete()
    assert not (viewer.layers["photo lesions"].data == before).all()
    w.undo()
    np.testing.assert_array_equal(viewer.layers["photo lesions"].data, before)
    assert w.table.item(0, 4).text() == ""
    w.mark_unsure()
    viewer.layers["photo lesions"].undo()  # napari's own Ctrl-Z takes it back as well
    np.testing.assert_array_equal(viewer.layers["photo lesions"].data, before)


def test_the_list_can_run_from_the_rim_of_the_field_inwards() -> None:
    """With the photo's round field known, every region has its place in it (``field_r``) and
    the list can run from the rim inwards, the annotator's decisions still last, through a cut
    and back; without the field there is no place and the order is the mistakes' own."""
    from dataclasses import replace

    from napari_lesionseg.core.anatomy import Anatomy
    from napari_lesionseg.core.model_config import ReviewConfig

    mask, prob, fuzzy = _scene()
    review = ReviewConfig(missed_rate=[[0.0, 1.0], [0.0, 0.4]], false_alarm_rate=[[0.0, 1.0], [0.9, 0.1]])
    field = Anatomy(field=(150.0, 200.0, 200.0))  # centred on the scene, radius 200 px
    rs = review_regions(mask, prob, fuzzy, threshold=0.5, review=review, anatomy=field)
    assert rs.placed and rs.order == "mistakes"
    by_box = {r.bbox[:2]: r.field_r for r in rs.regions}
    assert by_box[(50, 50)] == pytest.approx(np.hypot(54.5 - 150, 54.5 - 200) / 200, abs=1e-3)
    assert by_box[(100, 200)] == pytest.approx(np.hypot(129.5 - 150, 244.5 - 200) / 200, abs=1e-3)
    rs.order = "rim"
    rim = rs.cut(0.0).regions
    assert [r.field_r for r in rim] == sorted(by_box.values(), reverse=True)
    decided = replace(rim[0], decided=True, score=0.0)  # the annotator's own: after everything, in any order
    rs.regions = [decided, *rim[1:]]
    assert rs.cut(0.0).regions[-1] == decided and rs.cut(0.0).regions[:-1] == rim[1:]
    assert rs.cut(0.3).order == "rim" and [r.field_r for r in rs.cut(0.3).regions] == sorted(
        (r.field_r for r in rs.cut(0.3).regions), reverse=True)
    plain = review_regions(mask, prob, fuzzy, threshold=0.5, review=review)
    assert not plain.placed and {r.field_r for r in plain.regions} == {None}
    plain.order = "rim"  # nothing placed: the regions keep the mistakes' order among themselves
    assert plain.cut(0.0).regions == review_regions(mask, prob, fuzzy, threshold=0.5, review=review).regions


def test_the_list_can_run_from_the_fovea_outwards() -> None:
    """With the photo's fovea known, every region has its distance from it in disc diameters
    (``fovea_dd``) and the list can run from the fovea outwards, the annotator's decisions still
    last; the orders offered are those that mean something for the photo."""
    from dataclasses import replace

    from napari_lesionseg.core.anatomy import Anatomy
    from napari_lesionseg.core.model_config import ReviewConfig

    mask, prob, fuzzy = _scene()
    review = ReviewConfig(missed_rate=[[0.0, 1.0], [0.0, 0.4]], false_alarm_rate=[[0.0, 1.0], [0.9, 0.1]])
    eye = Anatomy(disc_centre=(150.0, 40.0), disc_diameter=50.0, fovea=(160.0, 165.0))
    rs = review_regions(mask, prob, fuzzy, threshold=0.5, review=review, anatomy=eye)
    assert rs.near_fovea and not rs.placed and rs.orders() == ["mistakes", "macula"]
    by_box = {r.bbox[:2]: r.fovea_dd for r in rs.regions}
    assert by_box[(50, 50)] == pytest.approx(np.hypot(54.5 - 160, 54.5 - 165) / 50, abs=1e-3)
    rs.order = "macula"
    near = rs.cut(0.0).regions
    assert [r.fovea_dd for r in near] == sorted(by_box.values())
    decided = replace(near[0], decided=True, score=0.0)  # the annotator's own: after everything
    rs.regions = [decided, *near[1:]]
    assert rs.cut(0.0).regions[-1] == decided and rs.cut(0.0).regions[:-1] == near[1:]
    both = review_regions(mask, prob, fuzzy, threshold=0.5, review=review,
                          anatomy=replace(eye, field=(150.0, 200.0, 200.0)))
    assert both.orders() == ["mistakes", "rim", "macula"]
    assert review_regions(mask, prob, fuzzy, threshold=0.5, review=review).orders() == ["mistakes"]
    no_fovea = review_regions(mask, prob, fuzzy, threshold=0.5, review=review, anatomy=replace(eye, fovea=None))
    assert not no_fovea.near_fovea and {r.fovea_dd for r in no_fovea.regions} == {None}


@pytest.mark.gui
def test_several_rows_deleted_at_once_and_undone_as_one(make_napari_viewer, qtbot) -> None:
    """Clearing many false alarms (a tessellated fundus: 54-74 in the periphery) took a Delete
    per region; now a Shift-click range of rows is deleted (or accepted, or marked) at once."""
    from qtpy.QtCore import Qt

    viewer, w = _scene_in_review(make_napari_viewer)
    lab = viewer.layers["photo lesions"]
    before = lab.data.copy()
    w.refresh()
    w.show()

    def click(row: int, mods=Qt.NoModifier) -> None:
        rect = w.table.visualRect(w.table.model().index(row, 0))
        qtbot.mouseClick(w.table.viewport(), Qt.LeftButton, mods, rect.center())

    from napari_lesionseg._qt.review import FIELD_COLUMN

    assert w.table.isColumnHidden(FIELD_COLUMN) and w.order_row.native.isHidden()  # no field known: no place
    assert w.order_combo.choices == ("mistakes",)
    click(0)
    click(2, Qt.ShiftModifier)
    assert w.target_rows() == [0, 1, 2] and w.current == 2
    w.delete()
    assert not lab.data.any()  # both lesions gone (the possible miss had no pixels to delete)
    assert [w.table.item(i, 4).text() for i in range(3)] == ["deleted"] * 3
    w.undo()  # one Undo takes the three back
    np.testing.assert_array_equal(lab.data, before)
    assert [w.table.item(i, 4).text() for i in range(3)] == [""] * 3
    click(0)
    click(2, Qt.ControlModifier)  # rows 0 and 2: the unsure lesion and the confident one
    w.mark_unsure()
    assert (lab.data[100:160, 200:290] == 255).all() and (lab.data[50:60, 50:60] == 255).all()
    lab.undo()  # napari's own Ctrl-Z: one step too
    np.testing.assert_array_equal(lab.data, before)
    w.next()  # walking on selects one row again: the next action is on that region only
    assert w.target_rows() == [w.current] and len(w.table.selectionModel().selectedRows()) == 1


def test_specks_are_listed_last() -> None:
    mask = np.zeros((200, 200), np.uint8)
    mask[10:12, 10:12] = 1  # a 4-px speck
    mask[100:130, 100:130] = 1
    prob = np.full(mask.shape, 0.6, np.float32)
    fuzzy = np.zeros(mask.shape, np.float32)
    fuzzy[10:12, 10:12] = 1.0  # the speck is the fuzziest
    rs = review_regions(mask, prob, fuzzy)
    assert [r.area_px for r in rs.regions] == [900, 4]


def _miss_scene():
    """threshold 0.5: a found lesion (p 0.9), a borderline lesion (p 0.55), and two sub-threshold
    blobs outside the mask (p 0.2 and 0.03) where the fuzzy map (here: 0) shows nothing."""
    mask = np.zeros((200, 300), np.uint8)
    prob = np.zeros((200, 300), np.float32)
    mask[10:30, 10:30] = 1
    prob[10:30, 10:30] = 0.9
    mask[60:70, 60:70] = 1
    prob[60:70, 60:70] = 0.55
    prob[120:140, 200:230] = 0.2
    prob[160:170, 100:110] = 0.03
    return mask, prob, np.zeros_like(prob)


def test_candidate_misses_come_from_the_probability_below_threshold() -> None:
    from napari_lesionseg.core.model_config import ReviewConfig

    mask, prob, fuzzy = _miss_scene()
    # the map alone (no threshold known) finds no candidate: nothing is fuzzy
    assert [r.kind for r in review_regions(mask, prob, fuzzy).regions] == ["lesion", "lesion"]
    # floor 5 % of the threshold: both blobs are candidates (the 0.03 one too)
    rs = review_regions(mask, prob, fuzzy, threshold=0.5)
    assert sorted((r.kind, r.area_px) for r in rs.regions) == [("fuzzy", 100), ("fuzzy", 600), ("lesion", 100),
                                                               ("lesion", 400)]
    rs = review_regions(mask, prob, fuzzy, threshold=0.5, review=ReviewConfig(floor=0.1))
    assert sorted((r.kind, r.area_px) for r in rs.regions) == [("fuzzy", 600), ("lesion", 100), ("lesion", 400)]
    # with rates, regions are ordered by the chance of being a mistake at their highest probability
    review = ReviewConfig(missed_rate=[[0.025, 0.5], [0.05, 0.6]], false_alarm_rate=[[0.5, 1.0], [0.7, 0.1]])
    rs = review_regions(mask, prob, fuzzy, threshold=0.5, review=review)
    assert [(r.kind, r.area_px) for r in rs.regions] == [("lesion", 100), ("fuzzy", 600), ("lesion", 400),
                                                         ("fuzzy", 100)]
    np.testing.assert_allclose([r.score for r in rs.regions], [0.64, 0.05 + 0.55 * 0.175 / 0.475, 0.22,
                                                                0.05 + 0.55 * 0.005 / 0.475], rtol=1e-5)
    assert rs.regions[1].max_prob == pytest.approx(0.2)
    # the chances add up to the mistakes expected among the regions (the first n, or all)
    assert rs.expected_mistakes() == pytest.approx(sum(r.score for r in rs.regions))
    assert rs.expected_mistakes(2) == pytest.approx(rs.regions[0].score + rs.regions[1].score)
    assert review_regions(mask, prob, fuzzy, threshold=0.5).expected_mistakes() is None  # fuzziness is no chance


def test_review_settings_from_layer_metadata() -> None:
    from napari_lesionseg.core.review import review_settings

    thr, review = review_settings({"threshold": 0.3, "review": {"floor": 0.02, "missed_rate": None,
                                                                "false_alarm_rate": None}})
    assert thr == 0.3 and review is not None and review.floor == 0.02
    assert review_settings({}) == (None, None)
    assert review_settings({"threshold": "x", "review": {"floor": 7}}) == (None, None)  # unreadable: ignored


def test_a_found_lesions_rim_is_not_a_possible_miss_and_accept_paints_the_core() -> None:
    from napari_lesionseg.core.review import candidate_misses

    mask = np.zeros((120, 120), np.uint8)
    prob = np.zeros((120, 120), np.float32)
    prob[20:50, 20:50] = 0.1  # rim ...
    prob[25:45, 25:45] = 0.9  # ... of a found lesion
    mask[25:45, 25:45] = 1
    prob[80:100, 80:100] = 0.05  # a faint halo ...
    prob[86:94, 86:94] = 0.3  # ... around a sub-threshold core: a possible miss
    cand = candidate_misses(prob, mask == 1, 0.025)
    assert not cand[20:50, 20:50].any() and cand[80:100, 80:100].all() and cand.sum() == 400
    rs = review_regions(mask, prob, np.zeros_like(prob), threshold=0.5)
    (miss,) = [r for r in rs.regions if r.kind == "fuzzy"]
    assert miss.area_px == 400 and miss.max_prob == pytest.approx(0.3)
    core = rs.lesion_pixels(miss, prob)
    assert core.sum() == 64 and core[86:94, 86:94].all()
    (found,) = [r for r in rs.regions if r.kind == "lesion"]
    assert rs.lesion_pixels(found, prob).sum() == 400


@pytest.mark.gui
def test_opening_the_next_image_lets_the_viewer_breathe(make_napari_viewer, qtbot, tmp_path, small_pairs) -> None:
    """*Open next image* closed four layers and opened four in one go (about 1.5-3 s of a frozen
    viewer with full-size photos): now one layer per turn of the event loop; the button waits,
    and a second press meanwhile does nothing."""
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    for img in sorted((small_pairs / "images").iterdir()):
        iid = proj.add_image(img)
        from PIL import Image

        w_, h_ = Image.open(img).size
        proj.save_prediction(iid, "m1", np.full((h_, w_), 0.1, np.float32), np.zeros((h_, w_), np.uint8),
                             np.ones((h_, w_), np.float32))
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))
    first = _open_next(qtbot, w)
    second = w.open_next_image()
    assert second != first and w.turns.busy and not w.next_image_button.enabled
    assert first in viewer.layers and second not in viewer.layers  # nothing closed or opened yet but a step
    assert w.open_next_image() is None  # pressed again meanwhile
    qtbot.waitUntil(lambda: not w.turns.busy and w.next_image_button.enabled, timeout=30_000)
    assert [ly.name for ly in viewer.layers] == [second, f"{second} probability", f"{second} fuzzy",
                                                 f"{second} lesions"]
    assert w.image_picker.name == second and second in w.info.text()


@pytest.mark.gui
def test_the_project_folder_is_chosen_with_a_magicgui_folder_field(make_napari_viewer, tmp_path) -> None:
    """Each dock's project field is a magicgui FileEdit: its Browse button's folder reaches the
    viewer's one project setting (every dock shows it), and the dock acts on it (Fine-tune's
    preflight); a cancelled dialog changes nothing."""
    viewer = make_napari_viewer()
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    _, ft = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Fine-tune model")
    folder = tmp_path / "proj"
    folder.mkdir()
    from magicgui.widgets import FileEdit

    assert all(isinstance(w.project.widget, FileEdit) for w in (seg, rev, ft))
    ft.project.widget._show_file_dialog = lambda *a, **k: None  # cancelled
    ft.project.widget.choose_btn.native.click()
    assert seg.session.project_dir is None and ft.project_edit.text() == ""
    ft.project.widget._show_file_dialog = lambda *a, **k: str(folder)
    ft.project.widget.choose_btn.native.click()
    assert seg.session.project_dir == folder
    assert seg.project_edit.text() == rev.project_edit.text() == ft.project_edit.text() == str(folder)
    assert "no saved corrections in this project yet" in ft.preflight_label.text()  # preflight ran on it


@pytest.mark.gui
def test_a_damaged_project_photo_is_said_and_passed_over(make_napari_viewer, qtbot, tmp_path, small_pairs) -> None:
    """A project photo whose file was damaged raised in the event loop at every click of Open
    next image, and the queue, most uncertain first, never got past it to the others."""
    from helpers import project_with_predictions

    proj = project_with_predictions(tmp_path / "proj", small_pairs / "images")
    damaged = proj.image_path("IDRiD_16")  # the most uncertain
    damaged.write_bytes(b"not a photo any more")
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, w) == "IDRiD_16"
    assert "IDRiD_16 cannot be opened" in w.info.text() and damaged.name in w.info.text()
    assert len(viewer.layers) == 0 and w.next_image_button.enabled
    assert _open_next(qtbot, w) == "IDRiD_04" and "IDRiD_04 lesions" in viewer.layers
    assert "image 2 of 2" in w.info.text()
    assert _open_next(qtbot, w) == "IDRiD_04"  # round again: the damaged one stays passed over


@pytest.mark.gui
def test_a_prediction_by_another_model_than_the_current_is_said(make_napari_viewer, qtbot, tmp_path,
                                                                  small_pairs) -> None:
    """After a fine-tuned version was promoted mid-queue, Open next image kept showing the old
    model's stored predictions as if they were the current model's."""
    from helpers import project_with_predictions

    proj = project_with_predictions(tmp_path / "proj", small_pairs / "images", ("default", "old-model"))
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))  # no version promoted: the shipped default is current
    assert _open_next(qtbot, w) == "IDRiD_16"
    assert "Segmented by 'old-model', not by the current model 'default'" in w.info.text()
    assert _open_next(qtbot, w) == "IDRiD_04"
    assert "Segmented by" not in w.info.text()


def test_the_annotators_decisions_are_not_listed_as_mistakes_again() -> None:
    """After Accept and Delete, Refresh listed the accepted miss as a likely false alarm (its
    probability is low) and the deleted false alarm as a likely miss (its probability is above
    the model's floor): every decision came back to be made again."""
    mask, prob, fuzzy = _scene()
    before = review_regions(mask, prob, fuzzy)
    edited = mask.copy()
    edited[100:160, 200:290] = 0  # the unsure lesion deleted
    edited[250:260, 300:320] = 1  # the candidate miss accepted
    decided = edited != mask
    after = review_regions(edited, prob, fuzzy, decided=decided)
    assert [r.decided for r in after.regions] == [False, True, True]
    assert after.regions[0].area_px == 100  # the confident lesion: the only region left to look at
    assert all(r.score == 0 for r in after.regions[1:])
    undecided = review_regions(edited, prob, fuzzy)
    assert not any(r.decided for r in undecided.regions) and len(undecided.regions) == len(after.regions)
    assert len(before.regions) == 3


def _three_region_project(tmp_path, small_pairs):
    """A project holding IDRiD_04 (small) with a stored prediction of three regions: a doubtful
    lesion (200 px), a sure one (200 px) and a possible miss (600 px); every region a 50 %
    chance of a mistake."""
    from PIL import Image

    from napari_lesionseg.core.model_config import ReviewConfig
    from napari_lesionseg.core.review import settings_metadata
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    img = small_pairs / "images" / "IDRiD_04.jpg"
    iid = proj.add_image(img)
    h, w = np.asarray(Image.open(img)).shape[:2]
    mask = np.zeros((h, w), np.uint8)
    prob = np.zeros((h, w), np.float32)
    mask[40:50, 40:60], prob[40:50, 40:60] = 1, 0.4  # a doubtful lesion
    mask[100:110, 100:120], prob[100:110, 100:120] = 1, 0.95  # a sure one
    prob[200:220, 200:230] = 0.3  # a possible miss
    rates = [[0.0, 1.0], [0.5, 0.5]]  # every region a 50 % chance of a mistake
    proj.save_prediction(iid, "m1", prob, mask, np.clip(prob * (1 - prob) * 4, 0, 1),
                         settings_metadata(0.5, ReviewConfig(missed_rate=rates, false_alarm_rate=rates)))
    return proj, iid


def _reviewing(make_napari_viewer, qtbot, proj, iid: str):
    """A viewer with Review alone on project ``proj``, *Open next image* pressed: ``iid`` shown."""
    viewer = make_napari_viewer()
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    rev.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, rev) == iid
    return viewer, rev


def _sure_lesion_accepted(make_napari_viewer, qtbot, tmp_path, small_pairs):
    """Review alone on :func:`_three_region_project` with every region listed, the sure lesion
    accepted (nothing painted). Returns the project, the photo's id, the viewer, the dock and the
    regions as first listed: (kind, area, sure)."""
    proj, iid = _three_region_project(tmp_path, small_pairs)
    viewer, rev = _reviewing(make_napari_viewer, qtbot, proj, iid)
    rev.hide_below.value = 0
    first = [(r.kind, r.area_px, r.mean_prob > 0.9) for r in rev.review.regions]
    rev.go(first.index(("lesion", 200, True)))
    rev.accept()
    return proj, iid, viewer, rev, first


@pytest.mark.gui
def test_review_marks_edited_regions_and_lists_them_last(make_napari_viewer, qtbot, tmp_path, small_pairs) -> None:
    proj, iid = _three_region_project(tmp_path, small_pairs)
    viewer, rev = _reviewing(make_napari_viewer, qtbot, proj, iid)
    rev.hide_below.value = 0  # list every region
    first = [(r.kind, r.area_px) for r in rev.review.regions]
    assert ("fuzzy", 600) in first and ("lesion", 200) in first
    rev.go(first.index(("lesion", 200)))
    rev.delete()
    rev.go(first.index(("fuzzy", 600)))
    rev.accept()
    rev.refresh()
    rows = [(r.kind, r.area_px, r.decided) for r in rev.review.regions]
    assert rows[0] == ("lesion", 200, False)  # the sure lesion: the one left to look at
    assert all(d for _k, _a, d in rows[1:]) and len(rows) == 3, rows
    # what was done stays said (the miss accepted is a lesion now, the lesion deleted a possible miss)
    assert [(rows[i][:2], rev.table.item(i, 4).text()) for i in (1, 2)] == [(("lesion", 600), "accepted"),
                                                                         (("fuzzy", 200), "deleted")]
    assert "2 decided by you (listed last)" in rev.info.text()
    rev.hide_below.value = 0.05  # the edited ones are no likely mistakes: set aside, and said apart
    assert [(r.kind, r.area_px) for r in rev.review.regions] == [("lesion", 200)]
    assert "2 decided by you" in rev.info.text() and "not listed" not in rev.info.text(), rev.info.text()


@pytest.mark.gui
def test_save_in_review_after_the_photos_own_layer_was_closed(make_napari_viewer, qtbot, tmp_path,
                                                              small_pairs) -> None:
    """The photo's image layer closed, its lesions layer left (still listed in Review): Save
    raised an AssertionError in the event loop and kept nothing."""
    proj, iid = _three_region_project(tmp_path, small_pairs)
    viewer, rev = _reviewing(make_napari_viewer, qtbot, proj, iid)
    rev.hide_below.value = 0
    rev.go(0)
    rev.delete()
    viewer.layers.remove(iid)
    qtbot.wait(50)
    assert rev.image_picker.name == iid
    version = rev.save_correction()
    assert version is not None and [v.version for v in proj.versions(iid)] == [1]
    assert rev.save_correction().version == 2  # saved unchanged on asking (a photo found right)


@pytest.mark.gui
def test_a_corrected_photo_opened_beside_segment_shows_its_mask_on_top(make_napari_viewer, qtbot, tmp_path,
                                                                       small_pairs) -> None:
    """With Segment open, a photo with a saved correction got its correction back from Segment
    as its image came, before Review added the maps: the mask lay under the fuzzy overlay, and
    the fuzzy layer was the one selected (``lesionseg gui --project``)."""
    proj, iid = _three_region_project(tmp_path, small_pairs)
    label = proj.prediction_map(iid, "mask").astype(np.uint8)
    proj.save_label(iid, label)
    viewer = make_napari_viewer()
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    rev.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, rev) == iid
    assert [ly.name for ly in viewer.layers][-1] == f"{iid} lesions"
    assert viewer.layers.selection.active.name == f"{iid} lesions"


@pytest.mark.gui
def test_open_next_image_offers_the_stored_lesion_types_at_once(make_napari_viewer, qtbot, tmp_path,
                                                                small_pairs) -> None:
    """A photo the five-output model segmented into the project (lesionseg predict --model
    multi --project): Open next image listed it for hemorrhages only, the type filter offering
    nothing else until Refresh (the list was made as its layer came, before the photo was
    known to the project), and without the disc and macula outlines a run shows."""
    from PIL import Image

    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    img = small_pairs / "images" / "IDRiD_04.jpg"
    iid = proj.add_image(img)
    h, w = np.asarray(Image.open(img)).shape[:2]
    prob, mask = np.zeros((h, w), np.float32), np.zeros((h, w), np.uint8)
    ex_prob, ex_mask = np.zeros((h, w), np.float32), np.zeros((h, w), np.uint8)
    ex_prob[50:60, 50:60], ex_mask[50:60, 50:60] = 0.9, 1
    anatomy = {"disc_centre": [150, 120], "disc_diameter": 50.0, "fovea": [160, 250], "fovea_method": "found"}
    proj.save_prediction(iid, "multi", prob, mask, np.zeros((h, w), np.float32), {"anatomy": anatomy},
                         others={"EX": (ex_prob, ex_mask, 0.5), "OD": (prob, mask, 0.5)})
    viewer, rev = _reviewing(make_napari_viewer, qtbot, proj, iid)
    assert list(rev.type_combo.choices) == ["HE", "EX"] and rev.type_combo.native.isVisibleTo(rev)
    assert f"{iid} disc and macula" in viewer.layers  # the outlines, as a run shows them (there were none)
    assert viewer.layers.selection.active.name == f"{iid} lesions"  # painting goes to the mask
    rev.type_combo.value = "EX"
    assert [(r.kind, r.area_px) for r in rev.review.regions] == [("lesion", 100)]
    rev.project_edit.setText(str(tmp_path / "another"))  # the maps shown stay the photo's, whatever the project
    rev.refresh()
    assert list(rev.type_combo.choices) == ["HE", "EX"] and len(rev.review.regions) == 1


@pytest.mark.gui
def test_review_alone_keeps_edits_and_decisions_across_a_napari_restart(make_napari_viewer, qtbot, tmp_path,
                                                                          small_pairs) -> None:
    """With Review opened alone, closing napari lost the hand edits (only Segment saved them on
    closing); and the decisions lived in the session only: opened again the next day, a photo
    listed its accepted lesion (Accept paints nothing) as undecided, at the top again."""
    from napari_lesionseg.core.image_io import read_label

    proj, iid, viewer, rev, first = _sure_lesion_accepted(make_napari_viewer, qtbot, tmp_path, small_pairs)
    rev.go(first.index(("fuzzy", 600, False)))
    rev.mark_unsure()  # the possible miss: who knows
    viewer.close()  # napari closed without pressing Save (its window closes: the docks release)
    assert [v.version for v in proj.versions(iid)] == [1]
    assert (read_label(proj.versions(iid)[0].path)[200:220, 200:230] == 255).all()
    assert proj.resume_ids() == [iid]  # where the review stands

    viewer2, rev2 = _reviewing(make_napari_viewer, qtbot, proj, iid)  # the next day
    assert rev2.info.text().startswith(f"{iid}: image 1 of 1 by uncertainty, where the last review stood;")
    rev2.hide_below.value = 0
    rows = [((r.kind, r.area_px, r.mean_prob > 0.9), rev2.table.item(i, 4).text(), r.decided)
            for i, r in enumerate(rev2.review.regions)]
    assert rows[0] == (("lesion", 200, False), "", False), rows  # the doubtful lesion: left to look at
    assert sorted(rows[1:]) == [(("fuzzy", 600, False), "unsure", True), (("lesion", 200, True), "accepted", True)]
    assert "2 decided by you (listed last)" in rev2.info.text()
    rev2.go(0)
    rev2.delete()
    viewer2.layers.remove(f"{iid} lesions")  # napari's trash button: the work is saved first, with Review alone
    assert [v.version for v in proj.versions(iid)] == [1, 2]
    assert len(proj.review_marks(proj.versions(iid)[1])) == 3
    assert "saved as version 2" in rev2.info.text()


@pytest.mark.gui
def test_a_decision_made_in_review_survives_napari_dying(make_napari_viewer, qtbot, tmp_path, small_pairs) -> None:
    """An Accept paints nothing, so the drafts that keep hand edits against a crash never saw it:
    napari dying lost it, and the lesion came back undecided at the top of the list. It is kept
    in the photo's draft two seconds after it is made, and a review opened on the project as the
    crash left it lists it as accepted, said in the info line."""
    import shutil

    from napari_lesionseg.core.store import Project

    proj, iid, viewer, rev, first = _sure_lesion_accepted(make_napari_viewer, qtbot, tmp_path, small_pairs)
    qtbot.waitUntil(lambda: (d := proj.draft(iid)) is not None and list((d.marks or {}).values()) == ["accepted"],
                    timeout=10_000)
    assert not proj.draft(iid).edited and proj.versions(iid) == []
    crashed = tmp_path / "as_the_crash_left_it"
    shutil.copytree(proj.root, crashed)  # napari killed here: nothing more is written
    viewer2, rev2 = _reviewing(make_napari_viewer, qtbot, Project(crashed), iid)
    assert "1 review decision kept at" in rev2.info.text() and "never saved" in rev2.info.text()
    rev2.hide_below.value = 0
    rows = [((r.kind, r.area_px, r.mean_prob > 0.9), rev2.table.item(i, 4).text()) for i, r in enumerate(rev2.review.regions)]
    assert rows[-1] == (("lesion", 200, True), "accepted"), rows  # decided: listed last, as before the crash
    assert [row[1] for row in rows[:-1]] == ["", ""]
    rev2.save_correction()
    saved = Project(crashed)
    assert saved.review_marks(saved.versions(iid)[-1]) == proj.draft(iid).marks and saved.draft(iid) is None


@pytest.mark.gui
def test_a_photo_renamed_with_review_alone_keeps_its_results_and_saves(make_napari_viewer, qtbot, tmp_path,
                                                                       small_pairs) -> None:
    """Only Segment made a photo's result layers follow its renamed layer (and only the photo
    chosen in it): with Review alone, Save then raised in the event loop (the photo's layer
    was gone under its old name)."""
    proj, iid = _three_region_project(tmp_path, small_pairs)
    viewer, rev = _reviewing(make_napari_viewer, qtbot, proj, iid)
    viewer.layers[iid].name = "left eye"
    assert {"left eye lesions", "left eye probability", "left eye fuzzy"} <= {ly.name for ly in viewer.layers}
    assert rev.image_picker.name == "left eye" and "left eye" in rev.session.photos
    rev.hide_below.value = 0
    rev.go(0)
    rev.delete()
    version = rev.save_correction()
    assert version is not None and version.image_id == iid and [v.version for v in proj.versions(iid)] == [1]


@pytest.mark.gui
def test_a_photo_kept_as_its_pixels_is_walked_and_saved_under_its_own_id(make_napari_viewer, qtbot, tmp_path,
                                                                        small_pairs) -> None:
    """A photo the project keeps as its pixels (a WebP, a DICOM layer, a turned JPEG) is
    identified by them, not by its PNG's bytes: Open next image did not bring its correction
    back into the session, an edit was then saved as a new photo 'scan-2', and
    `lesionseg predict proj/images --project proj` made it a second photo too. And a saved
    correction opened by Open next image (any photo's) could not be painted on: read-only."""
    from napari_lesionseg.core.image_io import read_image, read_label
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    rgb = read_image(small_pairs / "images" / "IDRiD_04.jpg")[0]
    iid = proj.add_pixels(rgb, "scan")
    h, w_ = rgb.shape[:2]
    proj.save_prediction(iid, "m1", np.full((h, w_), 0.1, np.float32), np.zeros((h, w_), np.uint8),
                         np.ones((h, w_), np.float32))
    first = np.zeros((h, w_), np.uint8)
    first[5:9, 5:9] = 1
    proj.save_label(iid, first)
    assert proj.add_image(proj.image_path(iid)) == iid == proj.find_image(proj.image_path(iid))
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, w) == "scan"
    assert w.session.photos["scan"].saved_version == 1  # the correction is the session's, not only shown
    lab = viewer.layers["scan lesions"]
    lab.paint((25, 25), 1)  # a brush stroke on the brought-back correction (it raised: read-only)
    w._save_if_edited("scan")
    assert proj.image_ids() == ["scan"] and proj.latest("scan").version == 2
    assert read_label(proj.latest("scan").path)[25, 25] == 1


@pytest.mark.gui
def test_a_brought_back_correction_can_be_painted_on(make_napari_viewer, qtbot, tmp_path, small_pairs) -> None:
    """Open next image showed a photo's saved correction as a read-only array (Pillow's view
    of the PNG): every brush stroke on it raised "assignment destination is read-only", so a
    photo corrected once could not be corrected again from the review queue."""
    from helpers import corrected_project
    from napari_lesionseg.core.image_io import read_label

    proj = corrected_project(tmp_path / "proj", small_pairs)
    iid = "IDRiD_04"
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, w) == iid
    lab = viewer.layers[f"{iid} lesions"]
    lab.paint((30, 40), 1)
    lab.fill((200, 300), 1)
    w._save_if_edited(iid)
    assert proj.latest(iid).version == 2 and read_label(proj.latest(iid).path)[30, 40] == 1


@pytest.mark.gui
def test_a_photo_found_right_is_saved_from_review_and_passed_over(make_napari_viewer, qtbot, tmp_path,
                                                                 small_pairs) -> None:
    """The queue passes over corrected photos; a photo the annotator found right needed the
    Segment dock's Save (another tab) to count as done."""
    from helpers import project_with_predictions

    proj = project_with_predictions(tmp_path / "proj", small_pairs / "images")
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, w) == "IDRiD_16"  # the most uncertain
    assert "2 without a saved correction" in w.info.text()
    version = w.save_correction()  # unchanged: vouched for
    assert version is not None and proj.latest("IDRiD_16").version == 1 and "passes over" in w.info.text()
    assert _open_next(qtbot, w) == "IDRiD_04" and "1 without a saved correction" in w.info.text()
    viewer2 = make_napari_viewer()  # the next day
    _, w2 = viewer2.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    w2.project_edit.setText(str(proj.root))
    assert _open_next(qtbot, w2) == "IDRiD_04"


def _segmented(viewer, name: str, corners: list[tuple[int, int]]) -> None:
    """Layers as Segment adds them for a 300x300 photo ``name`` with a 20-pixel lesion at each
    of ``corners``."""
    from napari_lesionseg.core.inference import Prediction
    from napari_lesionseg.core.segment_layers import prediction_layers

    prob = np.zeros((300, 300), np.float32)
    mask = np.zeros((300, 300), np.uint8)
    for y, x in corners:
        mask[y:y + 20, x:x + 20], prob[y:y + 20, x:x + 20] = 1, 0.9
    pred = Prediction(prob, mask, np.zeros_like(prob), np.zeros_like(mask, np.int32), [], None,  # type: ignore[arg-type]
                      "m1", 0.5)
    for data, kwargs, kind in prediction_layers(name, pred):
        getattr(viewer, f"add_{kind}")(data, **kwargs)


@pytest.mark.gui
def test_the_table_lists_the_photo_chosen_and_acts_on_it(make_napari_viewer) -> None:
    """The table once went on listing the photo reviewed before when another was chosen: Next
    framed, and Delete painted, the first photo's regions on the second. A dock opened after a
    photo was segmented showed nothing until Refresh."""
    viewer = make_napari_viewer()
    _segmented(viewer, "a", [(10, 10), (100, 100)])
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    assert w.image_picker.name == "a" and w.table.rowCount() == 2  # listed without Refresh
    _segmented(viewer, "b", [(200, 200)])
    assert w.image_picker.name == "a" and w.table.rowCount() == 2  # a photo added elsewhere is no switch
    w.image_picker.choose("b")
    assert [r.bbox for r in w.review.regions] == [(200, 200, 220, 220)]
    w.next()
    w.delete()
    assert not viewer.layers["b lesions"].data.any()
    assert viewer.layers["a lesions"].data.sum() == 800  # untouched
    for layer in [ly for ly in viewer.layers if ly.name.startswith("b ")]:
        viewer.layers.remove(layer)
    assert w.image_picker.name == "a" and len(w.review.regions) == 2  # the photo left is listed
    for layer in [ly for ly in viewer.layers if ly.name.startswith("a ")]:
        viewer.layers.remove(layer)
    assert w.table.rowCount() == 0 and w.review is None and w.next() is None


@pytest.mark.gui
def test_the_table_follows_a_mask_replaced_by_segment(make_napari_viewer, qtbot) -> None:
    """Segment's threshold replaces the mask; the table once went on listing the mask before
    (the bundled default: the tiny test model finds no lesion here)."""
    from napari_lesionseg.core.lesions import label_runs

    viewer = make_napari_viewer()
    viewer.open_sample("napari-lesionseg", "idrid_16")
    _, s = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    s.run()
    qtbot.waitUntil(lambda: s.run_button.enabled and "lesion(s)" in s.status.text(), timeout=120_000)
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    lab = viewer.layers["IDRiD_16 lesions"]

    def listed() -> int:
        return sum(r.kind == "lesion" for r in w.review.regions + w.review.hidden)

    assert listed() == label_runs(lab.data == 1)[1]
    w.hide_below.value = 0.0
    w.next()
    w.mark_unsure()  # painting is no replacement: the row keeps its status
    assert w.table.item(0, 4).text() == "unsure"
    s.threshold.value = s.threshold.value / 2  # asks first: the mask was edited by hand
    s.apply_threshold(force=True)
    assert w.review is None and w.table.rowCount() == 0  # no action on the mask before
    n = label_runs(lab.data == 1)[1]
    qtbot.waitUntil(lambda: w.review is not None, timeout=5000)  # once the mask settles
    assert n > 0 and listed() == n and w.table.item(0, 4).text() != "unsure"
    s.threshold.value = s.threshold.value * 2
    assert w.review is None
    w.next()  # Next lists the mask at once
    assert listed() == label_runs(lab.data == 1)[1] < n


@pytest.mark.gui
def test_a_lesion_painted_with_a_new_label_is_reviewed_as_the_save_keeps_it(make_napari_viewer) -> None:
    """napari's "new label" (M) paints 2, 3, ...: a save keeps any value of none of the photo's
    types as a hemorrhage, but Review listed only label 1 (the painted lesion was not listed,
    or came up as a possible miss)."""
    viewer = make_napari_viewer()
    _segmented(viewer, "a", [(10, 10)])
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    viewer.layers["a lesions"].data_setitem(np.nonzero(np.pad(np.ones((20, 20), bool), ((200, 80), (200, 80)))), 7)
    w.refresh()
    lesions = [r for r in w.review.regions + w.review.hidden if r.kind == "lesion"]
    assert sorted(r.bbox for r in lesions) == [(10, 10, 30, 30), (200, 200, 220, 220)]


@pytest.mark.gui
def test_a_fundus_periphery_is_listed_together_and_cleared_at_once(make_napari_viewer, qtbot) -> None:
    """The shipped default on the bundled sample, as an annotator clears peripheral false alarms
    (on tessellated fundi they crowd the rim): the list from the rim inwards, the rows of the
    regions beyond 0.7 of the field's radius Shift-selected and deleted at once, and no lesion
    is left there, while the lesions further in stay."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.open_sample("napari-lesionseg", "idrid_04")
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    _, w = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions", tabify=True)
    assert seg.run() is not None
    qtbot.waitUntil(lambda: seg.run_button.enabled and "lesion(s)" in seg.status.text(), timeout=120_000)
    w.image_picker.choose("IDRiD_04")
    w.refresh()
    assert w.review.placed and not w.order_row.native.isHidden()  # the field is known: the order offered
    # the default has no disc output; the disc placed for it gives the fovea, so the macula's order is offered too
    assert w.order_combo.choices == ("mistakes", "rim", "macula")
    w.order_combo.value = "macula"
    from napari_lesionseg._qt.review import FOVEA_COLUMN

    near = [r.fovea_dd for r in w.review.regions]
    assert near == sorted(near) and not w.table.isColumnHidden(FOVEA_COLUMN)
    assert w.table.item(0, FOVEA_COLUMN).text() == f"{near[0]:.2f}"
    inner_before = sum(r.kind == "lesion" and r.field_r < 0.7 for r in w.review.regions + w.review.hidden)
    w.order_combo.value = "rim"
    listed = w.review.regions
    places = [r.field_r for r in listed]
    assert places == sorted(places, reverse=True) and places[0] <= 1.05
    from napari_lesionseg._qt.review import FIELD_COLUMN

    assert not w.table.isColumnHidden(FIELD_COLUMN) and w.table.item(0, FIELD_COLUMN).text() == f"{places[0]:.2f}"
    outer = [i for i, r in enumerate(listed) if r.field_r >= 0.7]
    assert outer == list(range(len(outer))) and any(listed[i].kind == "lesion" for i in outer)
    w.show()

    def click(row: int, mods=Qt.NoModifier) -> None:
        w.table.scrollToItem(w.table.item(row, 0))
        rect = w.table.visualRect(w.table.model().index(row, 0))
        qtbot.mouseClick(w.table.viewport(), Qt.LeftButton, mods, rect.center())

    click(0)
    click(outer[-1], Qt.ShiftModifier)
    assert w.target_rows() == outer
    w.delete()
    w.order_combo.value = "mistakes"
    w.refresh()
    lesions = [r for r in w.review.regions + w.review.hidden if r.kind == "lesion"]
    assert all(r.field_r < 0.7 for r in lesions)
    assert sum(r.field_r < 0.7 for r in lesions) == inner_before  # the lesions further in stay
