"""The training module: config validation, the loop, fine-tuning and DDP, on tiny configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_here
from lesionseg_training.data import PatchSampler, Prepared, augment, split_pairs
from lesionseg_training.losses import soft_dice, supervised_loss
from lesionseg_training.train_config import AugmentConfig, DataConfig, LossConfig, OptimConfig, load_config, presets
from lesionseg_training.trainer import budget_progress, lr_at
from napari_lesionseg.core.dataclass_io import ConfigError
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.pairs import match_pairs

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def test_presets_load_and_validate() -> None:
    assert {"default", "tiny"} <= set(presets())
    for name in presets():
        cfg = load_config(name)
        assert cfg.model.network.in_channels == cfg.model.preprocess.channels
    with pytest.raises(ConfigError, match="data.crop_size"):
        load_config("tiny", ["data.crop_size=3"])
    # a crop larger than the photo's working grid trained on padding without a word
    with pytest.raises(ConfigError, match=r"data.crop_size: 256 px is larger than the working grid .*\(128 px"):
        load_config("tiny", ["data.crop_size=256"])
    with pytest.raises(ConfigError, match="optim.colour: unknown key"):
        load_config("tiny", ["optim.colour=1"])
    with pytest.raises(ConfigError, match="network.in_channels"):
        load_config("tiny", ["model.preprocess.green_contrast_sigma=null"])


def test_lr_schedule_warmup_and_cosine() -> None:
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_frac=0.1)
    assert lr_at(0, 0.0, cfg) == pytest.approx(1e-4)
    assert lr_at(10, 0.0, cfg) == pytest.approx(1e-3)
    assert lr_at(50, 0.5, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(99, 1.0, cfg) == pytest.approx(1e-4)
    assert budget_progress(10, 100, 30.0, 1.0) == pytest.approx(0.5)  # time is further along
    assert budget_progress(80, 100, 30.0, None) == pytest.approx(0.8)


def test_loss_ignores_label_255() -> None:
    logits = torch.randn(2, 1, 8, 8)
    y = (torch.rand(2, 8, 8) > 0.7).to(torch.uint8)
    base, _ = supervised_loss(logits, y, LossConfig())
    y2 = y.clone()
    y2[:, :2] = 255
    changed = logits.clone()
    changed[:, :, :2] = 40.0  # whatever the network says on ignored pixels...
    a, _ = supervised_loss(changed, y2, LossConfig())
    b, _ = supervised_loss(logits, y2, LossConfig())
    torch.testing.assert_close(a, b)  # ...does not count
    p = torch.ones(1, 4, 4)
    assert float(soft_dice(p, p, torch.ones_like(p), True)) == pytest.approx(1.0)


def test_sampler_centres_lesions_and_augment_keeps_pairs_aligned() -> None:
    y = np.zeros((100, 120), np.uint8)
    y[50, 60] = 1
    x = np.zeros((4, 100, 120), np.float32)
    x[:, 50, 60] = 5.0
    item = Prepared("a", x, y, np.ones((100, 120), bool))
    cfg = DataConfig(crop_size=32, batch_size=16, lesion_crop_fraction=1.0,
                     augment=AugmentConfig(brightness=0, contrast=0, gaussian_noise_sigma=0))
    xb, yb = PatchSampler([item], cfg, seed=0).batch()
    assert xb.shape == (16, 4, 32, 32) and yb.shape == (16, 32, 32)
    assert (yb.reshape(16, -1).sum(1) == 1).all()  # every crop holds the lesion
    for xi, yi in zip(xb, yb):  # image and mask transformed together
        assert xi[0][yi == 1][0] == 5.0
    rng = np.random.default_rng(0)
    xa, ya = augment(x[:, :32, :32], y[:32, :32], AugmentConfig(), rng)
    assert xa.shape == (4, 32, 32) and ya.dtype == np.uint8


def test_crops_centre_on_lesions_by_area_or_one_lesion_at_a_time() -> None:
    """``data.centre_on``: "pixel" (as shipped) draws a lesion pixel, so a 3600-px hemorrhage is
    the centre of nearly every lesion-centred crop and a 4-px one of almost none; "lesion" draws
    the lesion first, each as likely, then one of its pixels."""
    y = np.zeros((200, 200), np.uint8)
    y[20:80, 20:80] = 1  # 3600 px
    y[150:152, 150:152] = 1  # 4 px, far from it
    item = Prepared("a", np.zeros((4, 200, 200), np.float32), y, np.ones((200, 200), bool))
    small = 150 * 200 + 150

    def share_with_small(centre_on: str) -> float:
        cfg = DataConfig(crop_size=32, batch_size=400, lesion_crop_fraction=1.0, centre_on=centre_on,
                         augment=AugmentConfig(hflip=False, vflip=False, rot90=False, brightness=0, contrast=0,
                                               gaussian_noise_sigma=0))
        s = PatchSampler([item], cfg, seed=0)
        s.batch()
        return float((s.last_where.reshape(400, -1) == small).any(1).mean())

    assert share_with_small("pixel") < 0.02
    assert 0.4 < share_with_small("lesion") < 0.6
    with pytest.raises(ValueError, match="centre_on"):
        load_config("default", ['data.centre_on="blob"'])


def test_zoomed_crops_show_lesions_larger_or_smaller_with_every_pixel_traced_back() -> None:
    """``data.augment.zoom``: a crop shows a square of the photo m = crop / zoom across, resampled
    to the crop's size; labels stay the annotator's values, the source pixel of every crop pixel
    (DALE's ``last_where``) is one the crop shows, and at [1, 1] a crop is the photo's pixels
    themselves, not resampled."""
    y = np.zeros((200, 200), np.uint8)
    y[97:103, 97:103] = 1  # a 6 x 6 lesion
    y[0:5, 0:5] = 255
    fov = np.zeros((200, 200), bool)
    fov[:150] = True  # rows 150 on lie outside the disc
    x = np.repeat(np.where(y == 1, 3.0, 1.0)[None] * fov, 4, axis=0).astype(np.float32)
    item = Prepared("a", x, y, fov)
    plain = AugmentConfig(hflip=False, vflip=False, rot90=False, brightness=0, contrast=0, gaussian_noise_sigma=0)

    def crops(zoom: list[float], n: int = 64):
        cfg = DataConfig(crop_size=32, batch_size=n, lesion_crop_fraction=1.0, augment=replace(plain, zoom=zoom))
        s = PatchSampler([item], cfg, seed=0)
        xb, yb = s.batch()
        return s, xb, yb

    s1, x1, y1 = crops([1.0, 1.0])
    w1 = s1.last_where
    assert np.array_equal(x1[:, 0], np.where(w1 >= 0, x[0].ravel()[np.maximum(w1, 0)], 0))  # unresampled
    area1 = (y1 == 1).reshape(64, -1).sum(1)
    s2, x2, y2 = crops([2.0, 2.0])
    area2 = (y2 == 1).reshape(64, -1).sum(1)
    assert x2.shape == (64, 4, 32, 32) and set(np.unique(y2)) <= {0, 1, 255}
    assert np.median(area2) > 2.5 * np.median(area1)  # the lesion twice as wide: about four times the pixels
    where = s2.last_where
    assert np.array_equal(y2, np.where(where >= 0, y.ravel()[np.maximum(where, 0)], 0))  # labels traced back
    _, x5, y5 = crops([0.5, 0.5])
    assert np.median((y5 == 1).reshape(64, -1).sum(1)) < 0.4 * np.median(area1)
    outside = np.where(s2.last_where >= 0, ~item.fov.ravel()[np.maximum(s2.last_where, 0)], True)
    assert (x2.transpose(1, 0, 2, 3)[:, outside] == 0).all()  # the zero surround stays zero
    with pytest.raises(ValueError, match="zoom"):
        load_config("default", ["data.augment.zoom=[2.0, 1.0]"])


def test_split_is_deterministic_and_never_empty(small_pairs: Path) -> None:
    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    tr, va = split_pairs(pairs, DataConfig(val_every=6))
    assert va and tr
    tr1, va1 = split_pairs(pairs[:1], DataConfig())
    assert tr1 == va1 == pairs[:1]


def test_a_validation_set_of_healthy_photos_takes_a_photo_with_lesions(tmp_path: Path, small_pairs: Path) -> None:
    """Healthy photos validating by chance of their names scored a network that finds nothing
    perfect (Dice 1.0, AUPR NaN) and the run kept that checkpoint as its best."""
    import shutil

    from PIL import Image

    from lesionseg_training.data import validation_with_lesions

    imgs, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(small_pairs / "images", imgs)
    shutil.copytree(small_pairs / "masks", masks)
    for name in ("A_healthy", "B_healthy"):
        shutil.copy(imgs / "IDRiD_04.jpg", imgs / f"{name}.jpg")
        Image.fromarray(np.zeros((356, 536), np.uint8)).save(masks / f"{name}.png")
    pairs = {p.id: p for p in match_pairs(imgs, masks)}
    healthy, sick = [pairs["A_healthy"], pairs["B_healthy"]], [pairs["IDRiD_04"], pairs["IDRiD_16"]]
    tr, va = validation_with_lesions([healthy[1], *sick], healthy[:1])
    assert [p.id for p in va] == ["A_healthy", "IDRiD_16"] and [p.id for p in tr] == ["B_healthy", "IDRiD_04"]
    tr, va = validation_with_lesions([healthy[1], sick[0]], healthy[:1])  # the only one validates and trains
    assert [p.id for p in va] == ["A_healthy", "IDRiD_04"] and [p.id for p in tr] == ["B_healthy", "IDRiD_04"]
    assert validation_with_lesions(healthy, sick[:1]) == (healthy, sick[:1])  # a set with a lesion stays
    tr, va = split_pairs(list(pairs.values()), DataConfig(val_every=4, val_offset=0))  # reads nothing: by names
    assert [p.id for p in va] == ["A_healthy"]
    from lesionseg_training.trainer import train

    cfg = load_config("tiny", [f'data.images="{imgs}"', f'data.masks="{masks}"', "data.val_every=4",
                               "data.val_offset=0", "run.steps=1"])
    data = next(e for e in train(cfg, tmp_path / "run") if e["event"] == "data")
    assert data["val"] == ["A_healthy", "IDRiD_16"] and "IDRiD_16" not in data["train"]


def test_a_final_model_trains_on_every_photo_and_calibrates_on_some_of_them() -> None:
    from lesionseg_training.data import FINAL_CALIBRATION_PHOTOS, calibration_subset
    from napari_lesionseg.core.pairs import Pair

    pairs = [Pair(f"IDRiD_{i:02d}", Path(f"{i}.jpg"), Path(f"{i}.png")) for i in range(53, 0, -1)]
    tr, va = split_pairs(pairs, DataConfig(final=True))
    assert [p.id for p in tr] == sorted(p.id for p in pairs)  # every photo trains
    assert len(va) == FINAL_CALIBRATION_PHOTOS and set(va) <= set(tr)
    assert [p.id for p in va] == [f"IDRiD_{i:02d}" for i in range(1, 53, 4)][:12]  # every 4th of 53, as the folds
    assert calibration_subset(tr[:5]) == tr[:5]  # fewer photos than 12: all of them
    _, va = split_pairs(pairs, DataConfig(final=True, val_ids=["IDRiD_07"]))
    assert [p.id for p in va] == ["IDRiD_07"]
    # a fold's training photos are calibrated on by the same rule
    fold_train, _ = split_pairs(pairs, DataConfig(val_every=5, val_offset=3))
    assert calibration_subset(fold_train)[0].id == "IDRiD_01" and len(calibration_subset(fold_train)) == 12


def test_a_final_run_keeps_its_last_model_even_when_validation_falls(tmp_path: Path, small_pairs: Path,
                                                                     monkeypatch) -> None:
    import lesionseg_training.trainer as trainer
    from lesionseg_training.trainer import train
    from napari_lesionseg.core.progress import run_to_end

    real = trainer.validate
    calls = {"n": 0}

    def falling(*args, **kwargs):  # the in-sample score falls at every evaluation
        calls["n"] += 1
        return {**real(*args, **kwargs), "val_aupr": 1.0 / calls["n"]}

    monkeypatch.setattr(trainer, "validate", falling)
    overrides = [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                 "run.steps=4", "run.eval_every=2"]
    events: list[dict] = []
    best = run_to_end(train(load_config("tiny", [*overrides, "data.final=true"]), tmp_path / "final"), events.append)
    data = next(e for e in events if e["event"] == "data")
    assert sorted(data["train"]) == ["IDRiD_04", "IDRiD_16"] and set(data["val"]) <= set(data["train"])
    model = load_model_folder(best)
    assert model.metrics["step"] == 4 and model.metrics["val_in_sample"] is True
    assert set(model.lineage["data"]) == {"IDRiD_04", "IDRiD_16"} and model.unseen_photos == []
    recipe = model.lineage["recipe"]  # how it trained, beside what it trained on
    assert "model" not in recipe and recipe["run"]["steps"] == 4 and recipe["data"]["final"] is True
    calls["n"] = 0  # without data.final the first (highest) score is the model kept
    kept = run_to_end(train(load_config("tiny", overrides), tmp_path / "held_out"))
    assert load_model_folder(kept).metrics["step"] == 2


def test_the_shipped_default_was_trained_by_the_shipped_recipe() -> None:
    """``configs/default.toml`` is what the shipped default model (its first member, when it is
    an ensemble) was trained with (steps, crops, simulated cameras, losses, optimiser): changing
    the recipe without retraining the model, or shipping a model of another recipe, fails here."""
    from lesionseg_training.train_config import TrainConfig
    from napari_lesionseg.core.bundled import default_model_dir
    from napari_lesionseg.core.dataclass_io import from_dict, to_dict

    # read through the config loader, so an option added later with its old behaviour as the
    # default is not a difference
    lineage = load_model_folder(default_model_dir()).lineage
    if lineage.get("kind") == "ensemble":  # the default recipe's network is the first member
        lineage = lineage["members"][0]["lineage"]
    recipe = to_dict(from_dict(TrainConfig, lineage["recipe"]))
    cfg = to_dict(load_config("default", []))
    for section in ("optim", "loss", "paradigm", "adversary"):
        assert recipe[section] == cfg[section], section
    for key in ("crop_size", "batch_size", "lesion_crop_fraction", "cameras"):
        assert recipe["data"][key] == cfg["data"][key], key
    assert recipe["run"]["steps"] == cfg["run"]["steps"] and recipe["data"]["final"] is True
    assert recipe["data"]["cameras"]["share"] > 0


def test_a_final_model_names_the_annotated_photos_it_kept_out(tmp_path: Path, small_pairs: Path) -> None:
    """``data.final`` with ``exclude_ids``: the excluded photo that has a mask is still unseen
    (``held_out``, what benchmarks score as new photos); an excluded id with no pair is not."""
    from lesionseg_training.trainer import train
    from napari_lesionseg.core.progress import run_to_end

    imgs, masks = _three_pairs(tmp_path / "data", small_pairs)
    cfg = load_config("tiny", [f'data.images="{imgs}"', f'data.masks="{masks}"', "run.steps=2", "run.eval_every=2",
                               "data.final=true", 'data.exclude_ids=["IDRiD_16", "IDRiD_43"]'])
    model = load_model_folder(run_to_end(train(cfg, tmp_path / "final")))
    assert set(model.lineage["data"]) == {"IDRiD_04", "IDRiD_04b"}
    assert model.metrics["held_out"]["photos"] == ["IDRiD_16"] and model.unseen_photos == ["IDRiD_16"]
    import hashlib  # the lineage records what each photo and mask was, byte for byte

    got = model.lineage["data"]["IDRiD_04b"]
    assert got["image_sha256"] == hashlib.sha256((imgs / "IDRiD_04b.jpg").read_bytes()).hexdigest()
    assert got["mask_sha256"] == hashlib.sha256((masks / "IDRiD_04b_HE.png").read_bytes()).hexdigest()


def _three_pairs(root: Path, small_pairs: Path) -> tuple[Path, Path]:
    imgs, masks = root / "images", root / "masks"
    shutil.copytree(small_pairs / "images", imgs)
    shutil.copytree(small_pairs / "masks", masks)
    shutil.copy(imgs / "IDRiD_04.jpg", imgs / "IDRiD_04b.jpg")
    shutil.copy(masks / "IDRiD_04_HE.png", masks / "IDRiD_04b_HE.png")
    return imgs, masks


def test_finetune_makes_a_new_version_with_lineage_and_scores(tmp_path: Path, small_pairs: Path,
                                                              tiny_model_dir: Path) -> None:
    imgs, masks = _three_pairs(tmp_path / "data", small_pairs)
    out = tmp_path / "v2"
    cmd = [sys.executable, "-m", "lesionseg_training", "finetune", "--images", str(imgs), "--masks", str(masks),
           "--model", str(tiny_model_dir), "--out", str(out), "--steps", "3", "--events", "jsonl"]
    r = run_here(cmd)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and "baseline" in kinds and "step" in kinds and kinds[-1] == "finished"
    assert events[0]["val"] == ["IDRiD_16"] and "held out" in events[0]["validation"]
    new = load_model_folder(out)
    assert new.metrics["old"]["dice_ds"] >= 0 and "aupr" in new.metrics["new"]
    base = load_model_folder(tiny_model_dir)
    assert new.lineage["parent"]["weights_sha256"] == base.config.weights_sha256
    assert set(new.lineage["data"]) == {"IDRiD_04", "IDRiD_04b", "IDRiD_16"}
    assert new.lineage["recipe"]["run"]["steps"] == 3  # how the version was tuned (--steps 3)
    assert new.config.weights_sha256 != base.config.weights_sha256
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".") or p.name.endswith(".run")]  # no run left
    # never overwrites
    r2 = run_here(cmd)
    assert r2.returncode == 2 and "already exists" in r2.stderr


def test_finetune_on_masks_without_any_lesion_is_refused(tmp_path: Path, small_pairs: Path,
                                                          tiny_model_dir: Path) -> None:
    """All-empty corrections once "succeeded" with held-out Dice 0.00 -> 1.00 for a model that
    then found nothing."""
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.pairs import Pair

    pairs = []
    for stem in ("IDRiD_04", "IDRiD_16"):
        empty = tmp_path / f"{stem}_HE.png"
        h, w = np.asarray(Image.open(small_pairs / "masks" / f"{stem}_HE.png")).shape
        Image.fromarray(np.zeros((h, w), np.uint8)).save(empty)
        pairs.append(Pair(stem, small_pairs / "images" / f"{stem}.jpg", empty))
    with pytest.raises(LesionsegInputError, match="marks any lesion"):
        next(fine_tune(tiny_model_dir, pairs, Budget(steps=1), tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_whose_best_threshold_is_0_keeps_the_configs(tmp_path: Path) -> None:
    """A fine-tune on a 0/255 mask that is 255 everywhere (the whole photo a lesion; with the
    shipped model, many pixels at probability 0) fitted its best validation threshold at 0,
    and the run failed at its end on "inference.threshold: must lie in (0, 1)"."""
    from lesionseg_training.trainer import _save
    from napari_lesionseg.core.models.factory import build_model

    cfg = load_config("tiny")
    net = build_model(cfg.model.network)
    for thr, expected in ((0.0, cfg.model.inference.threshold), (1.0, cfg.model.inference.threshold), (0.3, 0.3)):
        folder = _save(tmp_path / f"t{thr}", net, cfg, {}, {}, thr)
        assert load_model_folder(folder).config.inference.threshold == pytest.approx(expected)


def test_finetune_on_an_inverted_mask_is_refused_naming_it(tmp_path: Path, small_pairs: Path,
                                                            tiny_model_dir: Path) -> None:
    """An inverted correction (lesions black on white) trained a model to call the whole
    fundus a lesion, without a word."""
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.pairs import Pair

    m = np.asarray(Image.open(small_pairs / "masks" / "IDRiD_04_HE.png"))
    inverted = tmp_path / "IDRiD_04_HE.png"
    Image.fromarray(np.where(m > 0, 0, 255).astype(np.uint8)).save(inverted)
    pairs = [Pair("IDRiD_04", small_pairs / "images" / "IDRiD_04.jpg", inverted),
             Pair("IDRiD_16", small_pairs / "images" / "IDRiD_16.jpg", small_pairs / "masks" / "IDRiD_16_HE.png")]
    with pytest.raises(LesionsegInputError, match=r"IDRiD_04_HE.png: marks 9\d% of the photo as lesion: is the mask inverted"):
        next(fine_tune(tiny_model_dir, pairs, Budget(steps=1), tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_finetune_holds_out_only_photos_with_lesions(small_pairs: Path, tmp_path: Path) -> None:
    from lesionseg_training.finetune import split_for_finetune
    from napari_lesionseg.core.pairs import Pair

    img = small_pairs / "images" / "IDRiD_04.jpg"
    pairs = [Pair(k, img, img) for k in ("a", "b", "c", "d")]
    train, val, _ = split_for_finetune(pairs, {"a", "b"})
    assert [p.id for p in val] == ["b"] and [p.id for p in train] == ["a", "c", "d"]
    train, val, how = split_for_finetune(pairs, {"c"})
    assert train == val and "optimistic" in how


def test_finetune_with_no_pairs_says_what_to_do(tmp_path: Path, tiny_model_dir: Path) -> None:
    from lesionseg_training.finetune import Budget, fine_tune

    with pytest.raises(ValueError, match="save at least one correction"):
        next(fine_tune(tiny_model_dir, [], Budget(steps=1), tmp_path / "x"))


@pytest.mark.slow
@pytest.mark.parametrize("preset, extra", [("tiny", []), ("dynsegnet_small", []),  # PatchGAN + dynamic gates
                                           ("tiny", ["--set", 'run.train_only="early"']),  # a frozen part under DDP
                                           ("tiny", ["--steps", "100000", "--minutes", "0.05"])])  # time: the lr follows it
def test_torchrun_two_cpu_ranks_end_identical(tmp_path: Path, small_pairs: Path, preset: str, extra: list) -> None:
    """Ranks see different crops; the generator, the dynamic gates and the one discriminator
    must still end bit-identical on every rank (``ranks_identical`` covers the adversary), also
    when part of the network is frozen (``run.train_only``: set before DDP registers it), and
    under a time budget (each rank set its learning rate from its own clock: they drifted)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc_per_node", "2", "-m", "lesionseg_training", "train", "--config", preset,
        "--images", str(small_pairs / "images"), "--masks", str(small_pairs / "masks"), "--steps", "3",
        "--out", str(tmp_path / "run"), "--quiet", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    done = events[-1]
    assert done["event"] == "done" and done["world"] == 2 and done["ranks_identical"] is True
    load_model_folder(tmp_path / "run" / "best")


def test_platt_calibration_keeps_ranking_and_unties_the_top() -> None:
    from lesionseg_training.calibrate import apply_knots, platt_fit, platt_knots

    rng = np.random.default_rng(0)
    t = rng.normal(-5, 3, 600_000)  # true log-odds; more pixels than the old 400,000-pixel subsample
    y = rng.random(t.size) < 1 / (1 + np.exp(-t))
    p = 1 / (1 + np.exp(-3 * t))  # an over-confident model: three times the true log-odds
    a, b = platt_fit(p, y)
    assert a == pytest.approx(1 / 3, abs=0.02) and b == pytest.approx(0, abs=0.05)  # the true log-odds back
    perm = rng.permutation(p.size)
    # every pixel counts: the order does not matter (up to the summation order's rounding; a
    # 400,000-pixel subsample moved the intercept by 0.07)
    assert platt_fit(p[perm], y[perm]) == pytest.approx((a, b), abs=1e-6)
    q = apply_knots(p, platt_knots(a, b))
    order = np.argsort(p)
    assert (np.diff(q[order]) >= -1e-12).all()  # monotone: the ranking is kept
    assert (q >= 254.5 / 255).mean() < (p >= 254.5 / 255).mean()  # fewer ties at the top byte


def test_nan_loss_stops_the_run_and_keeps_the_last_good_model(tmp_path: Path, small_pairs: Path, monkeypatch) -> None:
    import lesionseg_training.trainer as trainer
    from lesionseg_training.trainer import train

    real = trainer.supervised_loss
    calls = {"n": 0}

    def flaky(logits, target, cfg, weight=None):
        calls["n"] += 1
        loss, logs = real(logits, target, cfg, weight)
        return (loss * float("nan") if calls["n"] >= 3 else loss), logs

    monkeypatch.setattr(trainer, "supervised_loss", flaky)
    cfg = load_config("tiny", [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                               "run.steps=10", "run.eval_every=1"])
    gen = train(cfg, tmp_path / "run")
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            kept = stop.value
            break
    err = [e for e in events if e["event"] == "error"]
    assert err and "nan" in err[0]["message"] and "last good model is kept" in err[0]["message"]
    assert load_model_folder(kept).metrics["step"] == 2


def test_finetune_on_a_model_that_outputs_nan_fails_clearly(tmp_path: Path, small_pairs: Path) -> None:
    from helpers import tiny_config
    from napari_lesionseg.core.model_folder import save_model_folder
    from napari_lesionseg.core.models import build_model

    cfg = tiny_config()
    net = build_model(cfg.network)
    with torch.no_grad():
        net.head.bias.fill_(float("nan"))
    broken = save_model_folder(tmp_path / "broken", net, cfg)
    imgs, masks = _three_pairs(tmp_path / "data", small_pairs)
    r = run_here([sys.executable, "-m", "lesionseg_training", "finetune", "--images", str(imgs), "--masks",
                  str(masks), "--model", str(broken), "--out", str(tmp_path / "v2"), "--steps", "2"])
    assert r.returncode == 2 and "NaN" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "v2").exists()


def test_training_device_and_backend_follow_the_hardware(monkeypatch) -> None:
    """No GPU here: the device logic is checked with ``torch.cuda.is_available`` stood in."""
    from lesionseg_training.distributed import backend_for, init_from_env
    from napari_lesionseg.core.runtime import pick_device as train_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_device("auto") == torch.device("cpu") and backend_for(torch.device("cpu")) == "gloo"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train_device("cuda")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("auto").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train_device("auto", local_rank=1) == torch.device("cuda:1")  # torchrun rank on its own GPU
    assert train_device("cuda:0", local_rank=1) == torch.device("cuda:0")
    assert train_device("cpu", local_rank=1) == torch.device("cpu")
    assert backend_for(torch.device("cuda:1")) == "nccl"
    with pytest.raises(ConfigError, match="run.device"):
        load_config("tiny", ['run.device="tpu"'])


def test_training_autocast_follows_the_hardware(monkeypatch) -> None:
    """bf16 autocast on CPUs with native bf16 (and CUDA GPUs with bf16), fp32 elsewhere or
    when run.amp is off."""
    import napari_lesionseg.core.runtime as rt

    def training_autocast(dev, amp):  # what the trainer does with run.amp
        return rt.autocast(dev, rt.autocast_dtype("auto" if amp else "fp32", dev, training=True))

    cpu = torch.device("cpu")
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: True)
    with training_autocast(cpu, True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with training_autocast(cpu, False):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: False)
    with training_autocast(cpu, True):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    ctx = training_autocast(torch.device("cuda"), True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16 and ctx.device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert rt.autocast_dtype("auto", torch.device("cuda"), training=True) is None  # no fp16 without loss scaling
    assert rt.autocast_dtype("auto", torch.device("cuda")) == torch.float16  # inference: fp16 is fine


def test_finetune_calibration_keep_all_or_held_out(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    """``keep``: the base model's threshold and calibration; ``held_out``: refit on the held-out
    photo only; ``all``: refit on every corrected photo (so not the held-out fit)."""
    from lesionseg_training.finetune import Budget, fine_tune
    from napari_lesionseg.core.progress import run_to_end

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for p in match_pairs(small_pairs / "images", small_pairs / "masks"):  # four photos: one can be held out
        for flip, tag in ((False, ""), (True, "_flipped")):
            im, m = Image.open(p.image), Image.open(p.mask)
            if flip:
                im, m = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), m.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            im.save(images / f"{p.id}{tag}.jpg", quality=95)
            m.save(masks / f"{p.id}{tag}_HE.png")
    pairs = match_pairs(images, masks)
    base = load_model_folder(tiny_model_dir).config.inference
    got = {}
    for how in ("keep", "held_out", "all"):
        out = tmp_path / how
        run_to_end(fine_tune(tiny_model_dir, pairs, Budget(steps=2, calibration=how, replay_share=0.0), out))
        got[how] = load_model_folder(out).config.inference
    assert got["keep"].threshold == base.threshold and got["keep"].calibration == base.calibration
    assert got["held_out"].calibration is not None and got["all"].calibration is not None
    assert got["all"].calibration != got["held_out"].calibration  # four photos fitted, not one


def test_snapshots_keep_the_trained_weights_of_every_validation(tmp_path: Path, small_pairs: Path) -> None:
    """``run.snapshots``: one model folder per validation, holding the weights being trained
    (what ``state.pt`` resumes from), not the weight average that ``last/`` holds."""
    import torch

    from lesionseg_training.trainer import train
    from napari_lesionseg.core.progress import run_to_end

    cfg = load_config("tiny", [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                               "run.steps=4", "run.eval_every=2", "optim.ema=0.9", "run.snapshots=true"])
    run_to_end(train(cfg, tmp_path / "run"))
    snaps = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert snaps == ["step_2", "step_4"]
    raw = torch.load(tmp_path / "run" / "state.pt", weights_only=False)["model"]
    snap = load_model_folder(tmp_path / "run" / "snapshots" / "step_4")
    last = load_model_folder(tmp_path / "run" / "last")
    assert snap.metrics["step"] == 4 and snap.metrics["snapshot"] is True
    name = next(k for k, v in raw.items() if v.is_floating_point() and v.dim() == 4)
    assert torch.equal(snap.net.state_dict()[name], raw[name])
    assert not torch.equal(last.net.state_dict()[name], raw[name])  # last/ is the average
    cfg_off = load_config("tiny", [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                                   "run.steps=2", "run.eval_every=2"])
    run_to_end(train(cfg_off, tmp_path / "plain"))
    assert not (tmp_path / "plain" / "snapshots").exists()


@pytest.mark.parametrize("tool", ["replay", "pseudo_labels", "oof_calibrate", "fit_review"])
def test_the_training_tools_run_as_modules_under_the_name_they_print(tool: str) -> None:
    """``python -m lesionseg_training.<tool>`` as the READMEs say: no double-import warning
    (the package imports its trainer lazily), and a usage line naming the command that works."""
    r = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", f"lesionseg_training.{tool}", "--help"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: python -m lesionseg_training.{tool}") and not r.stderr


def test_a_rank_leaves_the_group_without_waiting_for_peers_when_its_run_failed(tmp_path: Path, monkeypatch) -> None:
    """``leave_process_group``: a finished run meets the other ranks at a barrier before the group
    is destroyed (teardown crashed otherwise); a rank whose run failed leaves at once, since its
    peers may be blocked in a collective it will never join."""
    import torch.distributed as dist

    from lesionseg_training.distributed import DistContext, leave_process_group

    met = []
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: met.append(1))
    for finished in (False, True):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'pg{finished}'}", rank=0, world_size=1)
        leave_process_group(DistContext(rank=0, world=2), finished)  # world 2: as a rank of two sees itself
        assert not dist.is_initialized()
        assert met == ([1] if finished else [])


def test_a_run_says_how_long_it_has_left(tmp_path: Path, small_pairs: Path, monkeypatch) -> None:
    """A 4000-step training runs for hours on two cores and its step lines said only the seconds
    spent: each now says the time left at the pace so far, within a time budget its rest."""
    from lesionseg_training import trainer
    from napari_lesionseg.core.progress import duration_text, run_to_end

    clock = [1000.0]

    def tick() -> float:  # every call ten seconds later: a step is a call or two
        clock[0] += 10.0
        return clock[0]

    monkeypatch.setattr(trainer.time, "time", tick)
    data = [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"']
    events: list[dict] = []
    run_to_end(trainer.train(load_config("tiny", [*data, "run.steps=12", "run.log_every=1", "run.eval_every=100"]),
                             tmp_path / "steps"), events.append)
    left = {e["step"]: e.get("left") for e in events if e.get("event") == "step"}
    assert all(left[s] is None for s in (1, 4, 12)), left  # no pace yet; nothing left at the end
    paced = [left[s] for s in range(5, 12)]
    assert all(isinstance(v, int) and v > 0 for v in paced) and paced == sorted(paced, reverse=True), left
    events.clear()
    run_to_end(trainer.train(load_config("tiny", [*data, "run.steps=100000", "run.minutes=10", "run.log_every=1",
                                                  "run.eval_every=100000"]), tmp_path / "minutes"), events.append)
    left = [e["left"] for e in events if e.get("event") == "step" and "left" in e]
    assert left and all(v <= 600 for v in left), left  # the budget's rest, not 100000 steps' worth
    assert [duration_text(s) for s in (4, 89, 720, 6720)] == ["4 s", "89 s", "12 min", "1 h 52 min"]
