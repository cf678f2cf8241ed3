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
    assert len(lineage["pseudo_labels"]["photos"]) == 2 and lineage["pseudo_labels"]["target"] == "hard"
    with pytest.raises(ValueError, match="pseudo"):
        load_config("tiny", [*base, "data.pseudo_share=0.5"])
    with pytest.raises(ValueError, match="pseudo_soft"):
        load_config("tiny", [*base, "data.pseudo_soft=true"])
    soft = load_config("tiny", [*base, f'data.pseudo_labels="{out}"', "data.pseudo_share=0.5", "data.pseudo_soft=true"])
    list(train(soft, tmp_path / "soft"))  # distillation: the teacher's probabilities as the target
    assert json.loads((tmp_path / "soft" / "last" / "lineage.json").read_text())["pseudo_labels"]["target"] == "soft"


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


def test_soft_pseudo_labels_keep_the_teachers_probability_and_refuse_hard_only_files(
        tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    """Each photo's file keeps the teacher's calibrated probability (``p``, round(255 p), 0
    outside the disc), agreeing with its hard labels; ``data.pseudo_soft`` loads it, and a file
    labelled before it was kept is refused by name, not trained on as hard labels."""
    from napari_lesionseg.core.image_io import read_image
    from napari_lesionseg.core.inference import work_probability
    from napari_lesionseg.core.preprocess import prepare

    teacher = load_model_folder(tiny_model_dir)
    photo = sorted((small_pairs / "images").glob("*.jpg"))[0]
    out = run_to_end(pseudo_label(teacher, [photo], tmp_path / "pl", lo=0.3, hi=0.6))
    z = np.load(out / f"{photo.stem}.npz")
    pre = teacher.config.preprocess
    x, _, disc = prepare(read_image(photo)[0], pre.fov_diameter, pre.green_contrast_sigma)
    prob = run_to_end(work_probability(teacher, x, disc))
    assert z["p"].dtype == np.uint8 and (z["p"][~z["fov"]] == 0).all()
    np.testing.assert_array_equal(z["p"][disc], np.round(prob[disc] * 255).astype(np.uint8))
    assert (z["p"][z["y"] == 1] >= 153).all() and (z["p"][(z["y"] == 0) & z["fov"]] <= 77).all()
    [hard] = load_pseudo_labels(out, pre)
    [soft] = load_pseudo_labels(out, pre, soft=True)
    assert hard.soft is None and soft.soft is not None
    np.savez(out / f"{photo.stem}.npz", x=z["x"], y=z["y"], fov=z["fov"])  # as labelled before 2026-12-06
    load_pseudo_labels(out, pre)
    with pytest.raises(LesionsegInputError, match=rf"{photo.stem}\.npz.*hard labels only"):
        load_pseudo_labels(out, pre, soft=True)


def _items(seed: int = 0, soft: bool = True):
    """An annotated photo (a square lesion) and a pseudo-labelled one whose teacher's probability
    rises from left to right (its hard labels: 0 / 255 / 1 at 0.05 and 0.5)."""
    from lesionseg_training.data import Prepared

    rng = np.random.default_rng(seed)
    fov = np.ones((48, 64), bool)
    fov[:, :4] = False
    y = np.zeros((48, 64), np.uint8)
    y[20:30, 30:40] = 1
    annotated = Prepared("a", (rng.random((4, 48, 64)) + 0.1).astype(np.float32) * fov, y, fov)
    p = np.where(fov, np.round(np.linspace(0, 255, 64))[None, :].repeat(48, 0), 0).astype(np.uint8)
    pseudo = Prepared("pseudo:b", (rng.random((4, 48, 64)) + 0.1).astype(np.float16) * fov,
                      label_from_probability(p / 255.0, fov, 0.05, 0.5), fov, soft=p if soft else None)
    return annotated, pseudo


@pytest.mark.parametrize("zoom", [(1.0, 1.0), (0.7, 1.4)])
def test_soft_targets_follow_their_crops_through_zoom_and_flips(zoom: tuple[float, float]) -> None:
    """Under ``data.pseudo_soft`` every crop carries its target: on a pseudo-labelled photo the
    teacher's probability at the very photo pixel each crop pixel shows (``last_where``), with
    nothing inside the disc ignored; on an annotated photo its mask; the crops themselves are the
    ones hard labels would have drawn (the soft target draws no random number)."""
    from lesionseg_training.data import PatchSampler
    from lesionseg_training.train_config import AugmentConfig, DataConfig

    cfg = DataConfig(crop_size=24, batch_size=12, augment=AugmentConfig(zoom=list(zoom)))
    annotated, pseudo = _items()
    sampler = PatchSampler([annotated], cfg, seed=3, replay=[pseudo], replay_share=0.5)
    hard = PatchSampler([annotated], cfg, seed=3, replay=[_items(soft=False)[1]], replay_share=0.5)
    kinds = set()
    for _ in range(4):
        x, y = sampler.batch()
        xh, yh = hard.batch()
        assert hard.last_soft is None
        np.testing.assert_array_equal(x, xh)
        np.testing.assert_array_equal(sampler.last_where, hard.last_where)
        for b in range(cfg.batch_size):
            where, got = sampler.last_where[b], sampler.last_soft[b]
            inside = where >= 0
            assert (got[~inside] == 0).all()
            if sampler.last_idx[b] == 1:
                kinds.add("pseudo")
                np.testing.assert_allclose(got[inside], pseudo.soft.ravel()[where[inside]] / 255.0, atol=1e-6)
                assert not (y[b] == 255).any() and (yh[b][inside] == pseudo.y.ravel()[where[inside]]).all()
            else:
                kinds.add("annotated")
                np.testing.assert_array_equal(got[inside], annotated.y.ravel()[where[inside]] == 1)
                np.testing.assert_array_equal(y[b], yh[b])
    assert kinds == {"pseudo", "annotated"}


def test_a_soft_target_is_what_the_step_learns() -> None:
    """``train_one_step(..., soft=...)``: the loss is taken against the soft target (its BCE
    term is the BCE of this step's logits against it), and the step moves the probabilities
    towards it where the hard labels would be ignored."""
    import copy

    import torch
    import torch.nn.functional as F

    from lesionseg_training.train_config import load_config
    from lesionseg_training.trainer import make_optimizer, train_one_step
    from napari_lesionseg.core.models import build_model

    torch.manual_seed(0)
    cfg = load_config("tiny", ["loss.dice_weight=0.0", "run.amp=false", "optim.lr=0.01"])
    net = build_model(cfg.model.network).train()
    twin = copy.deepcopy(net)
    opt = make_optimizer(list(net.parameters()), cfg.optim)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, cfg.model.network.in_channels, 32, 32)).astype(np.float32)
    y = np.zeros((4, 32, 32), np.uint8)
    soft = np.full((4, 32, 32), 0.8, np.float32)
    with torch.no_grad():
        z = net(torch.from_numpy(x)).logits[:, 0]
    want = F.binary_cross_entropy_with_logits(z, torch.from_numpy(soft),
                                              pos_weight=torch.tensor(cfg.loss.pos_weight)).item()
    logs = train_one_step(net, opt, x, y, cfg, soft=soft)
    assert logs["bce"] == pytest.approx(want, rel=1e-4)
    twin_opt = make_optimizer(list(twin.parameters()), cfg.optim)
    train_one_step(twin, twin_opt, x, y, cfg)
    for _ in range(20):
        train_one_step(net, opt, x, y, cfg, soft=soft)
        train_one_step(twin, twin_opt, x, y, cfg)  # the same steps on the hard labels (all 0 here)

    def mean_prob(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return torch.sigmoid(m(torch.from_numpy(x)).logits[:, 0]).mean().item()

    before = torch.sigmoid(z).mean().item()
    assert mean_prob(net) > 2 * before and mean_prob(twin) < before / 2
