"""Several lesion types through the Qt-free workflow: one label map with a value per type,
corrections saved per reviewed type (unreviewed types stay unknown, never "none"), the
fine-tune data made from them, and the export's lesion table by type."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lesionseg_training.data import prepare_pair
from napari_lesionseg.core.export import lesion_rows
from napari_lesionseg.core.image_io import read_label, read_mask
from napari_lesionseg.core.model_config import PreprocessConfig
from napari_lesionseg.core.progress import run_to_end
from napari_lesionseg.core.segment_layers import composite_mask, labels_to_label_map, legend
from napari_lesionseg.core.session import AnnotationSession
from napari_lesionseg.core.store import Project

ALL = ["HE", "MA", "EX", "SE", "OD"]


def test_label_map_values_per_type() -> None:
    he = np.zeros((4, 6), np.uint8)
    he[0, :2] = 1
    ex = np.zeros_like(he)
    ex[0, 1:4] = 1
    lab = composite_mask(he, {"EX": ex, "OD": np.ones_like(he)})
    assert lab[0].tolist() == [1, 1, 3, 3, 0, 0]  # hemorrhages on top; the optic disc is no lesion
    assert composite_mask(he).tolist() == he.tolist()  # HE only: today's 0/1 map
    # with probabilities, an overlap goes to the likelier type, wherever it stands in the paint order
    p_he = np.full(he.shape, 0.6, np.float32)
    p_ex = np.full(he.shape, 0.7, np.float32)
    p_ex[0, 0] = 0.1
    asked = []
    lab = composite_mask(he, {"EX": ex, "OD": np.ones_like(he)},
                         lambda t: asked.append(t) or {"HE": p_he, "EX": p_ex}[t])
    assert lab[0].tolist() == [1, 3, 3, 3, 0, 0] and sorted(asked) == ["EX", "HE"]  # only the overlapping types
    ma = np.zeros_like(he)
    ma[0, 1] = 1  # three types at one pixel: the highest of the three wins, one type's absence is no vote
    lab = composite_mask(he, {"EX": ex, "MA": ma}, {"HE": p_he, "EX": p_ex, "MA": np.full(he.shape, 0.9)}.get)
    assert lab[0].tolist() == [1, 2, 3, 3, 0, 0]
    painted = np.array([[0, 1, 2, 3, 4, 7, 255]])
    assert labels_to_label_map(painted).tolist() == [[0, 1, 1, 1, 1, 1, 255]]  # an HE-only model: all lesion
    assert labels_to_label_map(painted, ["HE", "MA", "EX", "SE"]).tolist() == [[0, 1, 2, 3, 4, 1, 255]]
    assert [name for _, name, _ in legend(["HE", "EX"])] == ["hemorrhage (HE)", "hard exudate (EX)", "unsure"]


def test_corrections_are_saved_for_the_reviewed_types_only(tmp_path: Path, multi_model_dir: Path,
                                                          small_pairs: Path) -> None:
    s = AnnotationSession()
    s.set_project(tmp_path / "proj")
    s.set_model(multi_model_dir)
    photo = small_pairs / "images" / "IDRiD_04.jpg"
    s.open_photo("a", photo)
    label = s.accept_run("a", run_to_end(s.run("a"))).label
    assert s.lesion_types() == ["HE", "MA", "EX", "SE"]
    assert set(np.unique(label)) == {0, 3}  # the constant model: hard exudate across the disc
    label[5:9, 5:9] = 1  # the annotator paints a hemorrhage; exudates untouched
    v = s.save_correction("a", label)
    proj = Project(tmp_path / "proj")
    assert proj.label_types(v) == ("HE",)  # EX shown but not reviewed: unknown to a fine-tune
    assert not v.path.with_suffix(".json").exists()  # HE only: written as every earlier version
    label[100:110, 100:110] = 0  # now an exudate area is rubbed out: EX was reviewed
    s.set_reviewed("a", ["HE", "SE"])  # and the annotator ticks soft exudates as checked too
    v2 = s.save_correction("a", label)
    assert proj.label_types(v2) == ("HE", "EX", "SE")
    assert json.loads(v2.path.with_suffix(".json").read_text()) == {"types": ["HE", "EX", "SE"]}
    record = proj.manifest()[-1]
    assert record["types"] == ["HE", "EX", "SE"] and record["EX_px"] == int((label == 3).sum())
    np.testing.assert_array_equal(read_label(v2.path), label)
    (pair,) = proj.corrected_pairs()
    assert pair.label_types == ("HE", "EX", "SE")
    assert pair.read_type("MA", label.shape) is None  # never reviewed: unknown
    ex = pair.read_type("EX", label.shape)
    assert ex is not None and (ex == 1).sum() == (label == 3).sum() and ex[100:110, 100:110].max() == 0
    he = pair.read_mask(label.shape)
    assert set(np.unique(he)) <= {0, 1} and (he == 1).sum() == 16  # exudate pixels are not hemorrhage
    it = prepare_pair(pair, PreprocessConfig(fov_diameter=128, green_contrast_sigma=4.0), outputs=ALL)
    assert (it.aux[0] == 255).all() and (it.aux[3] == 255).all()  # MA and OD unknown
    assert (it.aux[1] == 1).any() and not (it.aux[2] == 1).any() and (it.aux[2] != 255).any()  # EX, SE known
    # reopening the photo brings back the correction and what it was reviewed for
    s2 = AnnotationSession()
    s2.set_project(tmp_path / "proj")
    s2.set_model(multi_model_dir)
    back = s2.open_photo("a", photo)
    assert back.reviewed == {"HE", "EX", "SE"} and np.array_equal(back.saved, label)


def test_a_photo_opened_from_the_project_keeps_every_type(tmp_path: Path, multi_model_dir: Path,
                                                          small_pairs: Path) -> None:
    """A stored prediction keeps the other outputs: reopened in a new session (no run), the
    photo is reviewed by type and, never corrected, shows every type's mask."""
    from napari_lesionseg.core.segment_layers import project_image_layers

    s = AnnotationSession()
    s.set_project(tmp_path / "proj")
    s.set_model(multi_model_dir)
    photo = small_pairs / "images" / "IDRiD_04.jpg"
    s.open_photo("b", photo)
    pred = run_to_end(s.run("b"))
    s.accept_run("b", pred)
    d = s.store("b")
    assert d is not None and (d / "IDRiD_04_EX_prob.png").exists() and (d / "IDRiD_04_OD_mask.png").exists()
    proj = Project(tmp_path / "proj")
    stored = proj.prediction_types("IDRiD_04")
    assert set(stored) == {"MA", "EX", "SE", "OD"}
    p, m, thr = stored["EX"]
    assert thr == pred.others["EX"].threshold and np.array_equal(m, pred.others["EX"].mask)
    assert np.abs(p - pred.others["EX"].probability).max() <= 0.5 / 255 + 1e-6  # 8-bit, as predict writes
    masks_only = proj.prediction_types("IDRiD_04", probabilities=False)
    assert masks_only["EX"][0] is None and np.array_equal(masks_only["EX"][1], m)
    s2 = AnnotationSession()
    s2.set_project(tmp_path / "proj")
    s2.set_model(multi_model_dir)
    s2.open_photo("IDRiD_04", proj.image_path("IDRiD_04"))
    assert set(s2.type_maps("IDRiD_04")) == {"MA", "EX", "SE", "OD"}
    layers = {kw["name"]: data for data, kw, _ in project_image_layers(proj, "IDRiD_04")}
    assert set(np.unique(layers["IDRiD_04 lesions"])) == {0, 3}  # the exudates, not only the hemorrhages
    # a damaged record reads as "no other types", never an error or a file outside the folder
    (d / "IDRiD_04.json").write_text(json.dumps({"types": {"../../x": 0.5, "EX": "nan?"}, "mean_fuzzy": 0}))
    assert proj.prediction_types("IDRiD_04") == {}


def test_the_export_lists_every_type_with_its_place(tmp_path: Path) -> None:
    from napari_lesionseg.core.anatomy import Anatomy

    lab = np.zeros((60, 80), np.uint8)
    lab[10:14, 10:14] = 1
    lab[40:43, 60:63] = 2
    lab[30:31, 30:31] = 255
    anatomy = Anatomy(disc_centre=(12.0, 12.0), disc_diameter=10.0, fovea=(41.0, 61.0), fovea_method="found")
    rows = lesion_rows("x", lab, None, None, None, anatomy)
    assert [r["type"] for r in rows] == ["HE", "MA"]
    assert rows[0]["od_distance_dd"] == pytest.approx(0.0707, abs=0.001) and rows[0]["zone"] == "periphery"
    assert rows[1]["zone"] == "macula"
    assert Anatomy.from_dict(anatomy.to_dict()) == anatomy and Anatomy.from_dict({"disc_centre": "x"}) == Anatomy()
    assert [r["zone"] for r in lesion_rows("x", lab, None, None, None)] == [None, None]


@pytest.mark.gui
def test_segment_review_by_type_correct_one_type_save_and_fine_tune(make_napari_viewer, qtbot, tmp_path: Path,
                                                                     multi_model_dir: Path) -> None:
    """A model with every output in a real viewer: the legend and per-type visibility, the
    lesion table (sort, click to centre), review filtered to one type, a correction of that
    type saved as reviewed for it, and a fine-tune on it."""
    import shutil

    pytest.importorskip("napari")
    from napari_lesionseg._qt.segment import TABLE_COLUMNS
    from napari_lesionseg.core.registry import Registry

    project = tmp_path / "proj"
    shutil.copytree(multi_model_dir, project / "models" / "multi")
    Registry(project).promote("multi")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lesionseg", "idrid_16")
    _, seg = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Segment lesions")
    _, rev = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Review lesions", tabify=True)
    _, ft = viewer.window.add_plugin_dock_widget("napari-lesionseg", "Fine-tune model", tabify=True)
    seg.project_edit.setText(str(project))
    seg.load_project_models()
    assert "hard exudate (EX) = 3" in seg.legend.value.replace("&nbsp;", " ") and not seg.type_row.native.isHidden()
    assert seg.run() is not None
    qtbot.waitUntil(lambda: seg.run_button.enabled and "lesion(s)" in seg.status.text(), timeout=120_000)
    lab = viewer.layers["IDRiD_16 lesions"]
    assert set(np.unique(lab.data)) == {0, 3} and "EX" in seg.status.text()
    assert "IDRiD_16 disc and macula" not in viewer.layers  # this model's disc output finds no disc
    assert "no optic disc" in seg.status.text()

    seg.type_boxes["EX"].value = False  # hide exudates: drawn transparent, still in the mask
    assert lab.get_color(3)[3] == 0 and (lab.data == 3).any()
    seg.type_boxes["EX"].value = True
    assert lab.get_color(3)[3] > 0

    assert seg.table.rowCount() >= 1 and seg.table.item(0, 0).text() == "EX"
    from qtpy.QtCore import Qt

    assert seg.table.horizontalHeader().sortIndicatorOrder() == Qt.AscendingOrder  # by type: hemorrhages first
    assert seg.table.isColumnHidden(2) and seg.table.isColumnHidden(3)  # no scale, no disc: nothing to show
    seg.mm_per_px.value = 0.01
    assert not seg.table.isColumnHidden(2) and seg.table.item(0, 2).text() != ""
    pred = seg.session.photos["IDRiD_16"].prediction
    pred.others["EX"].lesions = [replace(pred.others["EX"].lesions[0], area_px=a) for a in (1155, 17, 3374)]
    seg.fill_table("IDRiD_16")
    seg.table.sortItems(1)  # by area: as numbers, not as text
    assert [seg.table.item(r, 1).text() for r in range(3)] == ["17", "1155", "3374"]
    field_r = TABLE_COLUMNS.index("field r")  # each lesion's place in the round field, without a disc too
    assert not seg.table.isColumnHidden(field_r) and 0 <= float(seg.table.item(0, field_r).text()) <= 1.05
    pred.others["EX"].lesions = [replace(les, field_r=r) for les, r in zip(pred.others["EX"].lesions, (0.95, 0.1, 0.5))]
    seg.fill_table("IDRiD_16")
    seg.table.sortItems(field_r, Qt.DescendingOrder)  # the rim first: where tessellated fundi raise false alarms
    assert [seg.table.item(r, field_r).text() for r in range(3)] == ["0.95", "0.5", "0.1"]
    pred.others["MA"].lesions = [replace(pred.others["EX"].lesions[0], type="MA")]
    pred.lesions = [replace(pred.others["EX"].lesions[0], type="HE")]
    seg.table.sortItems(0)  # by type, as the table starts: in the legend's order, hemorrhages first
    seg.fill_table("IDRiD_16")
    assert [seg.table.item(r, 0).text() for r in range(5)] == ["HE", "MA", "EX", "EX", "EX"]
    seg.table.sortItems(1)
    from napari_lesionseg._qt.review import camera

    before = tuple(camera(viewer).center)
    seg.centre_on_row(0)
    assert tuple(camera(viewer).center) != before

    rev.image_picker.choose("IDRiD_16")
    rev.refresh()
    assert list(rev.type_combo.choices) == ["HE", "MA", "EX", "SE"]
    assert rev.reviewed_boxes["HE"].value and not rev.reviewed_boxes["EX"].value
    rev.type_combo.value = "EX"
    assert rev.review is not None and rev.review.regions and rev.review.regions[0].kind == "lesion"
    rev.go(0)
    rev.delete()  # the constant model's one exudate region: not an exudate
    assert not (lab.data == 3).any()
    lab.paint((700, 1000), 1)  # and a hemorrhage the model missed
    v = seg.save_correction()
    assert v is not None
    proj = seg.session.project
    assert proj.label_types(proj.latest("IDRiD_16")) == ("HE", "EX")  # EX was corrected, MA/SE were not
    rev.refresh()
    assert rev.reviewed_boxes["EX"].value

    ft.preflight()
    assert "reviewed for HE on 1, EX on 1" in ft.preflight_label.text()
    ft.minutes.value = 1.0
    ft.extra_args = ["--steps", "2"]
    proc = ft.start()
    with qtbot.waitSignal(proc.finished, timeout=300_000):
        pass
    assert ft.new_version is not None, ft.status.text()
    from napari_lesionseg.core.model_folder import load_model_config

    assert load_model_config(ft.new_version).network.outputs == ALL


def test_fine_tune_teaches_only_the_types_a_correction_was_reviewed_for(tmp_path: Path, multi_model_dir: Path,
                                                                      small_pairs: Path) -> None:
    """The head's weights of a type no correction was reviewed for do not move (its targets
    are all unknown); a reviewed type's do."""
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.model_folder import load_model_folder

    proj = Project(tmp_path / "proj")
    for stem in ("IDRiD_04", "IDRiD_16"):
        iid = proj.add_image(small_pairs / "images" / f"{stem}.jpg")
        lab = read_mask(small_pairs / "masks" / f"{stem}_HE.png")
        lab[:40, :40] = 3  # an exudate the annotator drew
        proj.save_label(iid, lab, types=["HE", "EX"])
    out = tmp_path / "v2"
    run_to_end(fine_tune(multi_model_dir, proj.corrected_pairs(),
                          Budget(steps=3, replay_share=0.0, keep_base_if_better=False), out))  # the run's own weights
    old = load_model_folder(multi_model_dir).net.head
    new = load_model_folder(out).net.head
    moved = ((new.weight - old.weight).abs().flatten(1).sum(1) + (new.bias - old.bias).abs()).detach()
    outputs = ALL
    assert float(moved[outputs.index("HE")]) > 0 and float(moved[outputs.index("EX")]) > 0
    for t in ("MA", "SE", "OD"):  # never reviewed: no gradient, no Adam step
        assert float(moved[outputs.index(t)]) == 0.0, t


def test_corrections_reviewed_for_one_other_type_fine_tune_and_score_that_type(tmp_path: Path, multi_model_dir: Path,
                                                                                tiny_model_dir: Path,
                                                                                small_pairs: Path) -> None:
    """A microaneurysm study reviews MA only. Fine-tuning the hemorrhage model on it said "none
    of the corrected masks marks any lesion" and scoring it crashed (a traceback after "0
    images"); with the five-output model the fine-tune never chose a checkpoint (hemorrhage
    AUPR NaN at every check) and reported hemorrhage Dice 1.0 -> 1.0. Now the hemorrhage model
    is refused naming the types, and the five-output model is fine-tuned, checkpoints chosen
    and old / new scored on microaneurysms, saying so."""
    from test_cli import _one_clear_line, lesionseg

    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.errors import LesionsegInputError
    from napari_lesionseg.core.finetune_outcome import verdict
    from napari_lesionseg.core.lesion_types import TYPE_VALUE

    proj = Project(tmp_path / "proj")
    for stem in ("IDRiD_04", "IDRiD_16"):
        iid = proj.add_image(small_pairs / "images" / f"{stem}.jpg")
        he = read_mask(small_pairs / "masks" / f"{stem}_HE.png")
        proj.save_label(iid, np.where(he == 1, TYPE_VALUE["MA"], 0).astype(np.uint8), types=["MA"])
    pairs = proj.corrected_pairs()
    with pytest.raises(LesionsegInputError, match="reviewed for HE; they speak for MA only"):
        run_to_end(fine_tune(tiny_model_dir, pairs, Budget(steps=1), tmp_path / "no"))
    assert not (tmp_path / "no").exists()
    events: list[dict] = []
    run_to_end(fine_tune(multi_model_dir, pairs, Budget(steps=2, replay_share=0.0), tmp_path / "v2"), events.append)
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all(np.isfinite(e["val_aupr_MA"]) for e in evals)
    done = next(e for e in events if e["event"] == "finished")
    assert done["old_type"] == "MA" and np.isfinite(done["old_aupr"]) and np.isfinite(done["new_aupr"])
    plan = next(e for e in events if e["event"] == "plan")
    assert "(microaneurysm scores)" in verdict(done, plan, "v2")
    from napari_lesionseg.cli import _version_row

    assert "MA Dice" in _version_row(tmp_path / "v2", False)  # lesionseg models' row says what was scored

    _one_clear_line(lesionseg("evaluate", "--project", proj.root, "--model", tiny_model_dir),
                    "reviewed for HE; they speak for MA only", "--model multi")
    _one_clear_line(lesionseg("evaluate", "--project", proj.root, "--model", multi_model_dir, "--lesions", "EX"),
                    "reviewed for HE, EX", "score them with --lesions MA")
    r = lesionseg("evaluate", "--project", proj.root, "--model", multi_model_dir)  # by default: the types reviewed
    assert r.returncode == 0 and "hemorrhages not scored" in r.stdout, r.stderr
    assert re.search(r"^\s+MA\s+2\s", r.stdout, re.M), r.stdout
