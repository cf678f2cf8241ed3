"""Pseudo-labels for unlabelled photos (training/pseudo_labels.py): copies of annotated photos
are recognised and left out, the labels are the teacher's confident calls with the rest
ignored, a run trains on them and its lineage names the teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionseg_training.pseudo_labels import (
    MANIFEST,
    label_from_probability,
    load_pseudo_labels,
    main,
    pseudo_label,
    same_photographs,
)
from napari_lesionseg.core.bundled import sample_paths
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_config import PreprocessConfig
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.progress import run_to_end


def test_a_smaller_recompressed_copy_is_the_same_photograph_another_photo_is_not(tmp_path: Path) -> None:
    a, b = sample_paths("idrid_04")[0], sample_paths("idrid_16")[0]
    im = Image.open(a)
    copy = tmp_path / "gradtrain_IDRiD_999.jpg"  # as IDRiD's grading set holds it: a third the size, JPEG 90
    im.resize((im.width // 3, im.height // 3), Image.Resampling.BICUBIC).save(copy, quality=90)
    assert same_photographs([copy], [b, a]) == {copy.stem: a.stem}
    assert same_photographs([copy], [b]) == {}
    assert same_photographs([], [a]) == {}


def test_labels_are_the_confident_calls_and_the_rest_is_ignored() -> None:
    prob = np.array([[0.0, 0.04, 0.2, 0.5, 0.9]], np.float32)
    disc = np.array([[True, True, True, True, False]])
    assert label_from_probability(prob, disc, 0.05, 0.5).tolist() == [[0, 0, 255, 1, 0]]


def test_pseudo_label_writes_resumes_and_refuses_another_teacher(tmp_path: Path, small_pairs: Path,
                                                                 tiny_model_dir: Path) -> None:
    teacher = load_model_folder(tiny_model_dir)
    photos = sorted((small_pairs / "images").glob("*.jpg"))
    out = tmp_path / "pseudo"
    events = []
    run_to_end(pseudo_label(teacher, photos, out, lo=0.3, hi=0.6, left_out={photos[1].stem: "IDRiD_16"}),
               events.append)
    assert [e["photo"] for e in events] == [photos[0].stem]
    meta = json.loads((out / MANIFEST).read_text())
    assert [p["id"] for p in meta["photos"]] == [photos[0].stem]
    assert "IDRiD_16" in meta["left_out"][photos[1].stem]
    z = np.load(out / f"{photos[0].stem}.npz")
    assert set(np.unique(z["y"])) <= {0, 1, 255} and (z["y"][~z["fov"]] == 0).all()
    assert z["x"].dtype == np.float16 and z["x"].shape[1:] == z["y"].shape
    shares = meta["photos"][0]
    assert shares["lesion"] + shares["unsure"] <= 1.0

    stamp = (out / f"{photos[0].stem}.npz").stat().st_mtime_ns
    run_to_end(pseudo_label(teacher, photos, out, lo=0.3, hi=0.6))  # continues: nothing redone, the left-out stays out
    assert (out / f"{photos[0].stem}.npz").stat().st_mtime_ns == stamp
    assert not (out / f"{photos[1].stem}.npz").exists()
    with pytest.raises(LesionsegInputError, match="another teacher or thresholds"):
        run_to_end(pseudo_label(teacher, photos, out, lo=0.1, hi=0.6))

    items = load_pseudo_labels(out, teacher.config.preprocess)
    assert [it.id for it in items] == [f"pseudo:{photos[0].stem}"]
    with pytest.raises(LesionsegInputError, match="preprocessing"):
        load_pseudo_labels(out, PreprocessConfig(fov_diameter=teacher.config.preprocess.fov_diameter + 32))
    with pytest.raises(LesionsegInputError, match="not a pseudo-label folder"):
        load_pseudo_labels(tmp_path, teacher.config.preprocess)


def test_command_line_leaves_out_annotated_photographs(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    unl = tmp_path / "unlabelled"
    unl.mkdir()
    photos = sorted((small_pairs / "images").glob("*.jpg"))
    im = Image.open(photos[0])
    im.resize((im.width * 2 // 3, im.height * 2 // 3), Image.Resampling.BICUBIC).save(unl / "grad_001.jpg",
                                                                                     quality=90)
    Image.open(photos[1]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(unl / "grad_002.jpg", quality=90)
    code = main(["--teacher", str(tiny_model_dir), "--images", str(unl), "--out", str(tmp_path / "pl"),
                 "--not-like", str(small_pairs / "images")])
    assert code == 0
    meta = json.loads((tmp_path / "pl" / MANIFEST).read_text())
    assert [p["id"] for p in meta["photos"]] == ["grad_002"]  # a mirrored photo is another photo
    assert list(meta["left_out"]) == ["grad_001"]
    assert "1 left out" in capsys.readouterr().out
    assert main(["--teacher", str(tmp_path), "--images", str(unl), "--out", str(tmp_path / "x")]) == 2


def test_a_run_trains_on_pseudo_labels_and_its_lineage_names_the_teacher(tmp_path: Path, small_pairs: Path,
                                                                        tiny_model_dir: Path) -> None:
    from lesionseg_training.train_config import load_config
    from lesionseg_training.trainer import train

    teacher = load_model_folder(tiny_model_dir)
    photos = sorted((small_pairs / "images").glob("*.jpg"))
    out = run_to_end(pseudo_label(teacher, photos, tmp_path / "pl", lo=0.45, hi=0.55))
    base = [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"', "data.val_every=2",
            "run.steps=4", "run.eval_every=4"]
    cfg = load_config("tiny", [*base, f'data.pseudo_labels="{out}"', "data.pseudo_share=0.5"])
    events = list(train(cfg, tmp_path / "run"))
    assert {"event": "pseudo_labels", "photos": 2, "share": 0.5} in events
    lineage = json.loads((tmp_path / "run" / "last" / "lineage.json").read_text())
    assert lineage["pseudo_labels"]["teacher_weights_sha256"] == json.loads((out / MANIFEST).read_text())[
        "teacher_weights_sha256"]
    assert len(lineage["pseudo_labels"]["photos"]) == 2
    with pytest.raises(ValueError, match="pseudo"):
        load_config("tiny", [*base, "data.pseudo_share=0.5"])


def test_work_probability_is_what_predict_brings_to_full_size(small_pairs: Path, tiny_model_dir: Path) -> None:
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import predict, work_probability
    from napari_lesionseg.core.preprocess import from_work, prepare

    model = load_model_folder(tiny_model_dir)
    rgb, _ = read_image(sorted((small_pairs / "images").glob("*.jpg"))[0])
    pre = model.config.preprocess
    x, geom, disc = prepare(rgb, pre.fov_diameter, pre.green_contrast_sigma)
    work = run_to_end(work_probability(model, x, disc))
    full = run_to_end(predict(model, rgb))
    assert work.shape == geom.work_shape and (work[~disc] == 0).all()
    np.testing.assert_allclose(from_work(work, geom, geom.box_fov_mask()), full.probability, atol=1e-5)


def test_a_folds_finished_pseudo_labels_are_used_only_for_the_teacher_that_made_them(tmp_path: Path,
                                                                                    tiny_model_dir: Path) -> None:
    """``compare_presets.py``'s fold pseudo-label folder, once finished, is not relabelled; a run
    naming another teacher (a longer-trained fold model) with the same ``--work`` is refused
    instead of training on the first teacher's labels."""
    import argparse
    import shutil

    from helpers import benchmark_module

    cp = benchmark_module("compare_presets")
    annotated = tmp_path / "train"
    for sub in ("images", "masks_HE"):
        (annotated / sub).mkdir(parents=True)
    for k in range(1, 11):
        (annotated / "images" / f"IDRiD_{k:02d}.jpg").write_bytes(b"")
        (annotated / "masks_HE" / f"IDRiD_{k:02d}_HE.tif").write_bytes(b"")
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model_dir, teacher)
    metrics = json.loads((teacher / "metrics.json").read_text())
    (teacher / "metrics.json").write_text(json.dumps({**metrics, "held_out": {"photos": ["IDRiD_02", "IDRiD_07"]}}))
    args = argparse.Namespace(pseudo_teacher=str(teacher), work=str(tmp_path / "work"), unlabeled=str(tmp_path))
    out = tmp_path / "work" / "pseudo-f1"
    out.mkdir(parents=True)
    (out / "done").write_text("ok")
    sha = load_model_folder(teacher).config.weights_sha256
    (out / MANIFEST).write_text(json.dumps({"teacher_weights_sha256": sha}))
    assert cp.fold_pseudo_labels(1, args, annotated) == out  # its own labels: taken as they are
    (out / MANIFEST).write_text(json.dumps({"teacher_weights_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="another teacher"):
        cp.fold_pseudo_labels(1, args, annotated)
