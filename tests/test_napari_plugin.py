"""The plugin as napari sees it: the manifest validates, and File > Open Sample works."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")


def test_manifest_validates() -> None:
    from importlib import resources

    pm = npe2.PluginManifest.from_file(str(resources.files("napari_lesionseg") / "napari.yaml"))
    assert pm.name == "napari-lesionseg"
    assert {s.key for s in pm.contributions.sample_data} == {"idrid_04", "idrid_16"}


@pytest.mark.gui
def test_open_sample_through_the_manifest(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-lesionseg", "idrid_04")
    names = [layer.name for layer in viewer.layers]
    assert names == ["IDRiD_04", "IDRiD_04 ground truth"]
    img, gt = viewer.layers
    assert img.rgb and img.data.shape == (1424, 2144, 3)
    assert gt.data.shape == (1424, 2144) and set(np.unique(gt.data)) == {0, 1}
    assert len(layers) == 2


@pytest.mark.gui
def test_reader_writer_and_export(make_napari_viewer, tmp_path, small_pairs) -> None:
    from napari_lesionseg.core.export import export_project
    from napari_lesionseg.core.image_io import read_mask
    from napari_lesionseg.core.store import Project

    viewer = make_napari_viewer()
    # a plain photo still opens with napari's own reader (ours does not claim it)
    viewer.open(str(small_pairs / "images" / "IDRiD_04.jpg"))
    assert viewer.layers[-1].rgb
    # an IDRiD-style mask TIFF opens as Labels through our reader
    mask = read_mask(small_pairs / "masks" / "IDRiD_04_HE.png")
    from PIL import Image

    Image.fromarray(mask.astype(bool)).save(tmp_path / "idrid_04_he.tif")
    viewer.open(str(tmp_path / "idrid_04_he.tif"), plugin="napari-lesionseg")
    assert viewer.layers[-1].name == "idrid_04_he" and viewer.layers[-1].data.sum() == mask.sum()
    assert isinstance(viewer.layers[-1], napari.layers.Labels)
    # the labels writer is lossless and refuses nothing it offers
    viewer.layers[-1].save(str(tmp_path / "out.png"), plugin="napari-lesionseg")
    np.testing.assert_array_equal(read_mask(tmp_path / "out.png"), mask)
    # a project opens through its manifest: photo + latest correction as the editable lesions layer
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(small_pairs / "images" / "IDRiD_04.jpg")
    proj.save_label(iid, mask)
    viewer.open(str(proj.root / "manifest.jsonl"), plugin="napari-lesionseg")
    assert viewer.layers[-1].name == "IDRiD_04 lesions"  # its photo's layer: 'IDRiD_04 [1]' (one is open)
    np.testing.assert_array_equal(viewer.layers[-1].data, mask)
    n = len(viewer.layers)
    viewer.open(str(proj.root), plugin="napari-lesionseg")  # the folder itself, with our reader chosen
    assert len(viewer.layers) == n + 2
    files = export_project(proj, tmp_path / "export", mm_per_px=0.01)
    names = sorted(f.name for f in files)
    assert names == ["IDRiD_04_label.png", "IDRiD_04_lesions.csv", "IDRiD_04_mask.png", "IDRiD_04_overlay.png",
                     "lesions.csv"]
    np.testing.assert_array_equal(read_mask(tmp_path / "export" / "IDRiD_04_mask.png"), mask)
    header = (tmp_path / "export" / "lesions.csv").read_text().splitlines()
    assert len(header) > 1 and header[1].split(",")[3] != ""  # area_mm2 filled in


def test_project_export_keeps_an_earlier_tables_other_photos(tmp_path, small_pairs) -> None:
    """Exporting into a folder whose lesions.csv a ``predict`` run wrote: the rows of photos not
    exported stay, the exported photo's earlier rows are replaced by its correction's."""
    import csv

    from napari_lesionseg.core.export import export_project
    from napari_lesionseg.core.image_io import read_mask
    from napari_lesionseg.core.outputs import LESION_CSV_COLUMNS, write_csv
    from napari_lesionseg.core.store import Project

    out = tmp_path / "export"
    out.mkdir()
    earlier = [{"image": "other.jpg", "id": 1, "area_px": 7}, {"image": "IDRiD_04.jpg", "id": 1, "area_px": 99999}]
    write_csv(out / "lesions.csv", earlier, LESION_CSV_COLUMNS)
    proj = Project(tmp_path / "proj")
    iid = proj.add_image(small_pairs / "images" / "IDRiD_04.jpg")
    proj.save_label(iid, read_mask(small_pairs / "masks" / "IDRiD_04_HE.png"))
    export_project(proj, out)
    rows = list(csv.DictReader(open(out / "lesions.csv")))
    assert [(r["image"], r["area_px"]) for r in rows if r["image"] != iid] == [("other.jpg", "7")]
    assert len([r for r in rows if r["image"] == iid]) == len(list(csv.DictReader(open(out / f"{iid}_lesions.csv"))))


def test_project_export_uses_the_stored_prediction_and_keeps_unsure(tmp_path, small_pairs) -> None:
    """Export once wrote placeholder values (mean = max probability 1.0, fuzzy fraction 0) and a
    0/1/255 mask that looks black in ordinary viewers."""
    import csv

    from napari_lesionseg.core.export import export_project
    from napari_lesionseg.core.image_io import read_label
    from napari_lesionseg.core.store import Project

    proj = Project(tmp_path / "proj")
    iid = proj.add_image(small_pairs / "images" / "IDRiD_04.jpg")
    lab = np.zeros((356, 536), np.uint8)
    lab[100:120, 200:230] = 1
    lab[300:310, 50:60] = 255
    proj.save_label(iid, lab)
    out = export_project(proj, tmp_path / "ex")
    row = next(csv.DictReader(open(tmp_path / "ex" / "lesions.csv")))
    assert row["mean_prob"] == "" and row["max_prob"] == "" and row["fuzzy_fraction"] == ""  # no stand-ins
    prob = np.zeros((356, 536), np.float32)
    prob[100:120, 200:230] = 0.6
    prob[110, 210] = 0.8
    fuzzy = np.zeros_like(prob)
    fuzzy[100:110, 200:230] = 0.9
    proj.save_prediction(iid, "m1", prob, prob > 0.5, fuzzy)
    out = export_project(proj, tmp_path / "ex")
    (row,) = list(csv.DictReader(open(tmp_path / "ex" / "lesions.csv")))
    assert abs(float(row["max_prob"]) - 0.8) < 0.003 and 0.59 < float(row["mean_prob"]) < 0.62
    assert abs(float(row["fuzzy_fraction"]) - 0.5) < 1e-6
    assert (tmp_path / "ex" / "IDRiD_04_lesions.csv").read_text().splitlines()[1:] == \
        (tmp_path / "ex" / "lesions.csv").read_text().splitlines()[1:]
    from PIL import Image

    shown = np.asarray(Image.open(tmp_path / "ex" / "IDRiD_04_mask.png"))
    assert set(np.unique(shown)) == {0, 255} and int((shown == 255).sum()) == 600  # lesion only, visible
    np.testing.assert_array_equal(read_label(tmp_path / "ex" / "IDRiD_04_label.png"), lab)  # exact
    assert len(out) == 5


@pytest.mark.gui
@pytest.mark.smoke
def test_the_main_job_opens_the_sample_with_the_segment_dock(make_napari_viewer, tmp_path) -> None:
    """What the README's first command (``lesionseg gui``) shows, with a screenshot."""
    from PIL import Image

    from napari_lesionseg._qt.launch import open_segment_window

    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1600, 1000)
    widget = open_segment_window(viewer)
    assert "IDRiD_04" in viewer.layers and widget.image_picker.name == "IDRiD_04"
    assert any(name.startswith("Segment lesions") for name in viewer.window.dock_widgets)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(shot).save(tmp_path / "main_job.png")
    assert shot.shape[0] > 400 and shot.shape[1] > 800 and shot[..., :3].std() > 10  # a real picture


@pytest.mark.gui
def test_gui_on_a_filled_project_opens_its_most_uncertain_photo_for_review(make_napari_viewer, qtbot, tmp_path,
                                                                          small_pairs) -> None:
    """``lesionseg gui --project P`` after ``predict --project P`` opened the bundled sample, not
    the project's photos: the annotator had to find Review lesions and press Open next image."""
    from helpers import project_with_predictions
    from napari_lesionseg._qt.launch import open_segment_window

    proj = project_with_predictions(tmp_path / "proj", small_pairs / "images")
    viewer = make_napari_viewer()
    seg = open_segment_window(viewer, project=proj.root)
    review = next(w for name, w in viewer.window.dock_widgets.items() if name.startswith("Review lesions"))
    qtbot.waitUntil(lambda: "IDRiD_16 lesions" in viewer.layers and not review.turns.busy, timeout=30_000)
    assert "IDRiD_04" not in viewer.layers  # neither the sample nor the less uncertain photo
    assert seg.image_picker.name == "IDRiD_16" and "image 1 of 2" in review.info.text()
    # an empty project still opens the sample
    viewer2 = make_napari_viewer()
    open_segment_window(viewer2, project=tmp_path / "empty")
    assert "IDRiD_04" in viewer2.layers


@pytest.mark.gui
def test_every_form_field_of_the_three_docks_is_a_magicgui_widget(make_napari_viewer) -> None:
    """Issue 16: the forms are magicgui's (pickers, slider, spin boxes, switches, buttons); plain
    Qt is left only to what magicgui does not offer (the tables, the live plot, status text)."""
    from qtpy.QtWidgets import (
        QAbstractButton,
        QAbstractScrollArea,
        QAbstractSlider,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
    )

    viewer = make_napari_viewer()
    docks = [viewer.window.add_plugin_dock_widget("napari-lesionseg", name)[1]
             for name in ("Segment lesions", "Review lesions", "Fine-tune model")]

    def from_magicgui(w, dock) -> bool:
        while w is not None and w is not dock:
            if hasattr(w, "_magic_widget") or isinstance(w, QAbstractScrollArea):
                return True
            w = w.parentWidget()
        return False

    fields = (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit)
    for dock in docks:
        found = [w for kind in fields for w in dock.findChildren(kind)]
        assert len(found) >= 5
        plain = [f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}" for w in found
                 if not from_magicgui(w, dock)]
        assert not plain, f"{type(dock).__name__}: {plain}"


@pytest.mark.gui
def test_the_three_docks_open_as_tabs_and_the_window_keeps_its_height(make_napari_viewer, qtbot) -> None:
    """Issue 16 finding 8: opened one after another from the Plugins menu, the three docks were
    stacked, the window grew taller than a 1600x1000 screen and the live plot was 15 px tall."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    docks = [viewer.window.add_plugin_dock_widget("napari-lesionseg", name)[0]
             for name in ("Segment lesions", "Review lesions", "Fine-tune model")]
    qtbot.waitUntil(lambda: len(window.tabifiedDockWidgets(docks[0])) == 2, timeout=5_000)
    qtbot.wait(50)
    assert window.height() <= 1000, window.height()
    assert docks[2].widget().canvas.height() > 100  # the live loss plot has room


def test_gui_command_is_there() -> None:
    from test_cli import lesionseg

    r = lesionseg("gui", "--help", process=True)
    assert r.returncode == 0 and "--project" in r.stdout and "photos" in r.stdout


@pytest.mark.gui
def test_photos_napari_cannot_read_are_opened_by_ours_or_said(make_napari_viewer, small_pairs, tmp_path) -> None:
    """Folders listed JPEG/PNG/TIFF/BMP only: a WebP, AVIF, JPEG 2000 or .jfif photo was passed
    over in silence (given by name it was segmented). Listed now, an AVIF made `lesionseg gui`
    raise a traceback (napari has no reader for it): such a photo opens through our reader, and
    a broken HEIC one is said while the others open (a phone's HEIC photo opens, through
    pillow-heif); only unreadable photos: one line."""
    from PIL import Image

    from napari_lesionseg._qt.launch import open_segment_window
    from napari_lesionseg._qt.viewer_session import photo_source
    from napari_lesionseg.core.errors import LesionsegInputError
    from napari_lesionseg.core.image_io import heif_ready

    photos = tmp_path / "photos"
    photos.mkdir()
    im = Image.open(small_pairs / "images" / "IDRiD_04.jpg")
    im.save(photos / "a.jpg")
    im.save(photos / "b.avif")
    im.save(photos / "c.webp")
    (photos / "d.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    assert heif_ready()  # the testing extra installs pillow-heif (the heic extra)
    im.save(photos / "e.heic")
    viewer = make_napari_viewer()
    widget = open_segment_window(viewer, [photos])
    assert sorted(widget.image_picker.names) == ["a", "b", "c", "e"]
    assert photo_source(viewer.layers["b"]) == str(photos / "b.avif")  # kept by its file, as napari's layers are
    # File > Open (any reader that takes the file): napari had none for AVIF or HEIC; ours takes them
    other = make_napari_viewer()
    other.open(str(photos / "b.avif"), plugin=None)
    other.open(str(photos / "e.heic"), plugin=None)
    assert [ly.name for ly in other.layers] == ["b", "e"] and other.layers["b"].rgb and other.layers["e"].rgb
    assert photo_source(other.layers["b"]) == str(photos / "b.avif")
    assert photo_source(other.layers["e"]) == str(photos / "e.heic")
    only = tmp_path / "only"
    only.mkdir()
    (only / "d.heic").write_bytes((photos / "d.heic").read_bytes())
    with pytest.raises(LesionsegInputError, match="a HEIC/HEIF photo"):
        open_segment_window(make_napari_viewer(), [only])


@pytest.mark.gui
def test_gui_on_a_folder_opens_each_photo(make_napari_viewer, qtbot, small_pairs, tmp_path) -> None:
    """``lesionseg gui photos/`` raised a traceback: napari opened the folder as one stack, no
    photo to segment ("expected a 2-D RGB photograph"), and a folder of photos of different
    sizes could not be opened at all. Each photo is now its own layer (their masks beside them
    are not photos); a folder too large to open at once is refused before any window, with the
    way to review a batch."""
    import shutil

    from test_cli import _one_clear_line, lesionseg

    from napari_lesionseg._qt.launch import MAX_PHOTOS, open_segment_window

    shutil.copytree(small_pairs / "images", tmp_path / "photos")
    shutil.copytree(small_pairs / "masks", tmp_path / "photos", dirs_exist_ok=True)  # IDRiD_04_HE.png ...
    viewer = make_napari_viewer()
    widget = open_segment_window(viewer, [tmp_path / "photos"])
    assert [ly.name for ly in viewer.layers] == ["IDRiD_04", "IDRiD_16"]
    assert sorted(widget.image_picker.names) == ["IDRiD_04", "IDRiD_16"]
    many = tmp_path / "many"
    many.mkdir()
    for k in range(MAX_PHOTOS + 1):
        (many / f"p{k:02d}.jpg").write_bytes((small_pairs / "images" / "IDRiD_04.jpg").read_bytes())
    _one_clear_line(lesionseg("gui", many, process=True), "too many to open at once", "--project")
    # a clinic's folder of patient folders: gui has no --recursive, which it once told to add
    (tmp_path / "clinic" / "p1").mkdir(parents=True)
    (tmp_path / "clinic" / "p1" / "OD.jpg").write_bytes((small_pairs / "images" / "IDRiD_04.jpg").read_bytes())
    line = _one_clear_line(lesionseg("gui", tmp_path / "clinic", process=True), "its subfolders hold 1", "-r --project proj",
                           "lesionseg gui --project proj")
    assert "add --recursive" not in line



def test_photos_napari_reads_wrongly_are_shown_as_the_photo(make_napari_viewer, qtbot, small_pairs, tmp_path) -> None:
    """napari's own reader showed a CMYK JPEG as RGBA (the inks as colours, the black ink as
    opacity: a black, see-through photo that the dock segmented as inverted colours, "does not
    look like a fundus photograph") and a planar TIFF as three gray slices (not offered to
    segment). With a dock open both are shown, and segmented, as the photo our reader (the
    command line's) decodes, under their own names and in their places; a stack of gray slices
    is left as it is."""
    import tifffile
    from PIL import Image

    from napari_lesionseg._qt.launch import open_segment_window
    from napari_lesionseg.core.image_io import read_image

    photo = np.asarray(Image.open(small_pairs / "images" / "IDRiD_16.jpg").reduce(4))
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(photo, -1, 0), photometric="rgb", planarconfig="separate")
    Image.fromarray(photo).save(tmp_path / "plain.png")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "cmyk.jpg"))
    assert viewer.layers["cmyk"].data.shape[-1] == 4  # napari's reading, before a dock opens
    widget = open_segment_window(viewer, [tmp_path / "planar.tif", tmp_path / "plain.png"])
    qtbot.waitUntil(lambda: viewer.layers["planar"].rgb and viewer.layers["cmyk"].data.shape[-1] == 3, timeout=5000)
    assert [ly.name for ly in viewer.layers] == ["cmyk", "planar", "plain"]
    for name, file in (("cmyk", "cmyk.jpg"), ("planar", "planar.tif")):
        np.testing.assert_array_equal(viewer.layers[name].data, read_image(tmp_path / file)[0])
    np.testing.assert_array_equal(viewer.layers["planar"].data, photo)
    assert viewer.layers["cmyk"].contrast_limits == [0, 255]
    assert sorted(widget.image_picker.names) == ["cmyk", "plain", "planar"]
    assert viewer.layers["plain"].data.shape == photo.shape  # a photo napari reads right is left as it is
    # three gray slices that are slices (a stack, not a colour photo stored by planes) stay slices
    tifffile.imwrite(tmp_path / "stack.tif", np.moveaxis(photo, -1, 0), photometric="minisblack")
    viewer.open(str(tmp_path / "stack.tif"))
    qtbot.wait(100)
    assert viewer.layers["stack"].data.shape == (3, *photo.shape[:2]) and not viewer.layers["stack"].rgb


@pytest.mark.gui
def test_a_project_opened_with_file_open_is_reviewed_and_its_edits_kept(make_napari_viewer, qtbot, tmp_path,
                                                                        small_pairs) -> None:
    """File > Open on a project folder ``lesionseg predict --project`` filled (no manifest yet:
    our reader refused it) opens the photo the review starts at, its stored mask as the docks'
    editable lesions layer; the docks take the project from it, so an edit is kept when the
    annotator goes on. The reader used to open every photo with its correction as a layer no
    dock knew: edits made in it were lost on closing napari."""
    from helpers import project_with_predictions
    from napari_lesionseg._io import get_reader

    proj = project_with_predictions(tmp_path / "proj", small_pairs / "images")
    assert not (proj.root / "manifest.jsonl").exists()
    dataset = tmp_path / "dataset"
    for sub in ("images", "labels"):
        (dataset / sub).mkdir(parents=True)
    assert get_reader(str(dataset)) is None  # a dataset's images/ and labels/ are no project
    viewer = make_napari_viewer()
    viewer.open(str(proj.root), plugin="napari-lesionseg")
    assert [ly.name for ly in viewer.layers] == ["IDRiD_16", "IDRiD_16 probability", "IDRiD_16 fuzzy",
                                                 "IDRiD_16 lesions"]  # the most uncertain photo only
    lesions = viewer.layers["IDRiD_16 lesions"]
    edited = lesions.data.copy()
    edited[10:20, 10:20] = 1
    lesions.data = edited  # edited before any dock is open
    _, review = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions")
    assert review.session.project_dir == proj.root and review.project.line_edit.text() == str(proj.root)
    review.open_next_image()  # saves the edit, goes on to the next photo
    qtbot.waitUntil(lambda: not review.turns.busy, timeout=10000)
    assert "IDRiD_04 lesions" in viewer.layers and "IDRiD_16" not in viewer.layers
    np.testing.assert_array_equal(proj.latest_label("IDRiD_16"), edited)
    # a photo of another project does not move the docks to it
    other = project_with_predictions(tmp_path / "other", small_pairs / "images")
    viewer.layers.clear()
    viewer.open(str(other.root), plugin="napari-lesionseg")
    assert review.session.project_dir == proj.root


def test_an_empty_project_says_how_to_fill_it(tmp_path) -> None:
    from napari_lesionseg._io import get_reader
    from napari_lesionseg.core.errors import LesionsegInputError
    from napari_lesionseg.core.store import Project

    root = Project(tmp_path / "proj").root
    reader = get_reader(str(root))
    assert reader is not None
    with pytest.raises(LesionsegInputError, match="holds no photos yet.*lesionseg predict") as err:
        reader(str(root))
    assert str(root) in str(err.value)
