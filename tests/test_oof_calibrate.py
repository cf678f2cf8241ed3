"""training/oof_calibrate.py: a final model's calibration, threshold and review rates fitted on
the fold models' predictions on the photos each of them held out."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import run_here, tiny_config
from lesionseg_training.calibrate import calibrate, calibrate_pooled
from lesionseg_training.data import Prepared, find_pairs
from lesionseg_training.fit_review import fit_review_pooled
from lesionseg_training.oof_calibrate import fold_groups
from lesionseg_training.oof_predictions import predict_groups
from lesionseg_training.train_config import DataConfig
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import load_model_folder, save_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.models.output import SegOutput


class ProbIsChannel(nn.Module):
    """A 'network' whose probability is one channel of its input (so a test sets it)."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> SegOutput:
        p = x[:, self.channel:self.channel + 1].clamp(1e-6, 1 - 1e-6)
        return SegOutput(logits=torch.log(p / (1 - p)) + 0 * self.w)


def _photo(k: int, right: int) -> Prepared:
    """A lesion square; channel ``right`` predicts it (0.9 in, 0.1 out), the other channel
    predicts its opposite."""
    h, w = 64, 64
    y = np.zeros((h, w), np.uint8)
    y[16:40, 16:40] = 1
    good = np.where(y == 1, 0.9, 0.1).astype(np.float32)
    x = np.zeros((4, h, w), np.float32)
    x[right], x[1 - right] = good, 1 - good
    return Prepared(f"p{k}", x, y, np.ones((h, w), bool))


def test_each_fold_model_predicts_its_own_photos() -> None:
    """Two folds whose models read different channels: pooled with each model on its own
    photos the calibration separates lesions perfectly; one model on every photo cannot."""
    cfg = tiny_config()
    a = [_photo(k, right=0) for k in range(3)]
    b = [_photo(k + 3, right=1) for k in range(3)]
    _, figs = calibrate_pooled(cfg, predict_groups([(ProbIsChannel(0), a), (ProbIsChannel(1), b)], cfg))
    assert figs["val_best_dice_calibrated"] > 0.99 and figs["platt_a"] > 0
    _, wrong = calibrate(ProbIsChannel(0), cfg, a + b)
    assert wrong["val_best_dice_calibrated"] < 0.8
    photos = list(predict_groups([(ProbIsChannel(0), a), (ProbIsChannel(1), b)], cfg))
    calibrated, _ = calibrate_pooled(cfg, photos)
    _, review = fit_review_pooled(calibrated, photos)
    assert review["fit_images"] == 6 and review["fit_pixel_error_share"] < 0.01


@pytest.fixture()
def twelve_pairs(tmp_path: Path, small_pairs: Path) -> Path:
    """Twelve annotated photos (copies of the two samples) as images/ and masks/."""
    root = tmp_path / "photos"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    samples = sorted((small_pairs / "images").glob("*.jpg"))
    for k in range(12):
        src = samples[k % len(samples)]
        shutil.copy(src, root / "images" / f"p{k:02d}.jpg")
        shutil.copy(small_pairs / "masks" / f"{src.stem}_HE.png", root / "masks" / f"p{k:02d}_HE.png")
    return root


def _folder(path: Path, trained: list[str], held: list[str] | None, seed: int, **metrics: object) -> Path:
    torch.manual_seed(seed)
    cfg = tiny_config()
    m = {"val_images": held, **metrics} if held is not None else dict(metrics)

    def replay(tmp: Path) -> None:
        (tmp / "replay").mkdir()
        (tmp / "replay" / "index.json").write_text("[]")

    return save_model_folder(path, build_model(cfg.network), cfg, m, {"kind": "train", "data": dict.fromkeys(trained, {})},
                             fill_more=replay)


IDS = [f"p{k:02d}" for k in range(12)]
FOLDS = [IDS[0:4], IDS[4:8], IDS[8:12]]


def _fold_models(tmp_path: Path) -> list[Path]:
    return [_folder(tmp_path / f"fold{i}", [p for p in IDS if p not in held], held, seed=i)
            for i, held in enumerate(FOLDS)]


def test_fold_groups_count_each_training_photo_once(tmp_path: Path, twelve_pairs: Path) -> None:
    pairs = find_pairs(DataConfig(images=str(twelve_pairs / "images"), masks=str(twelve_pairs / "masks")))
    final = load_model_folder(_folder(tmp_path / "final", IDS[:10], IDS[:2], seed=9, val_in_sample=True))
    groups = fold_groups(final, _fold_models(tmp_path), pairs)
    got = [g.ids for g in groups]
    assert got == [IDS[0:4], IDS[4:8], IDS[8:10]]  # p10, p11: not the final model's training photos


def test_fold_groups_refuse_what_is_not_out_of_fold(tmp_path: Path, twelve_pairs: Path) -> None:
    pairs = find_pairs(DataConfig(images=str(twelve_pairs / "images"), masks=str(twelve_pairs / "masks")))
    final = load_model_folder(_folder(tmp_path / "final", IDS, IDS[:2], seed=9, val_in_sample=True))
    folds = _fold_models(tmp_path)
    overlap = _folder(tmp_path / "overlap", IDS[5:], IDS[3:5], seed=5)
    with pytest.raises(LesionsegInputError, match="p03 is also held out"):
        fold_groups(final, [*folds, overlap], pairs)
    leak = _folder(tmp_path / "leak", IDS, IDS[:4], seed=6)
    with pytest.raises(LesionsegInputError, match="trained on photos it is said to hold out"):
        fold_groups(final, [leak], pairs)
    with pytest.raises(LesionsegInputError, match="not a fold model"):
        fold_groups(final, [tmp_path / "final"], pairs)  # a final model holds out nothing
    other = replace(tiny_config(), preprocess=replace(tiny_config().preprocess, fov_diameter=96))
    torch.manual_seed(0)
    odd = save_model_folder(tmp_path / "odd", build_model(other.network), other, {"val_images": IDS[:4]},
                            {"data": dict.fromkeys(IDS[4:], {})})
    with pytest.raises(LesionsegInputError, match="another preprocess"):
        fold_groups(final, [odd], pairs)


def test_cli_writes_an_out_of_fold_calibrated_folder(tmp_path: Path, twelve_pairs: Path) -> None:
    final = _folder(tmp_path / "final", IDS[:10], IDS[:2], seed=9, val_in_sample=True, step=7)
    folds = _fold_models(tmp_path)
    out = tmp_path / "calibrated"
    cmd = [sys.executable, "-m", "lesionseg_training.oof_calibrate", "--model", str(final), "--folds", *map(str, folds),
           "--images", str(twelve_pairs / "images"), "--masks", str(twelve_pairs / "masks"), "--out", str(out)]
    r = run_here(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "fitted on 10 photos" in r.stdout
    model = load_model_folder(out)
    cal = model.metrics["calibration"]
    assert cal["fitted_on"] == "out_of_fold" and cal["photos"] == IDS[:10]
    assert cal["fold_models"] == {str(folds[0]): IDS[0:4], str(folds[1]): IDS[4:8], str(folds[2]): IDS[8:10]}
    assert model.metrics["step"] == 7 and model.metrics["review_fit"]["fitted_on"] == "out_of_fold"
    assert model.config.inference.fuzzy.map == "error_rate"
    assert model.config.inference.calibration != load_model_folder(final).config.inference.calibration
    assert json.loads((out / "lineage.json").read_text()) == json.loads((final / "lineage.json").read_text())
    assert (out / "weights.safetensors").read_bytes() == (final / "weights.safetensors").read_bytes()
    assert (out / "replay" / "index.json").is_file()
    # a fold model that is no fold model: the file and the problem, no traceback, nothing written
    bad = [*cmd[: cmd.index("--folds") + 1], str(final), *cmd[cmd.index("--images"):]]
    bad[bad.index("--out") + 1] = str(tmp_path / "never")
    r = run_here(bad, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "not a fold model" in r.stderr and str(final) in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "never").exists()
    # the folder is never replaced
    before = (out / "config.json").read_bytes()
    r = run_here(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "already exists" in r.stderr and (out / "config.json").read_bytes() == before


def _from_folds_and_from_stored(tmp_path: Path, final: Path, folds: list[Path], stored: list[Path], images: list[str],
                                *options: str) -> tuple[list[str], object, object]:
    """``oof_calibrate`` of ``final`` from the fold models (folder ``a``) and from their stored
    predictions (``b``), checked to fit the same; the command's start and the two folders."""
    calibrate = [sys.executable, "-m", "lesionseg_training.oof_calibrate", "--model", str(final), *options]
    for source, out in ((["--folds", *map(str, folds), *images], "a"), (["--predictions", *map(str, stored)], "b")):
        r = run_here([*calibrate, *source, "--out", str(tmp_path / out)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert "fitted on 10 photos" in r.stdout
    a, b = load_model_folder(tmp_path / "a"), load_model_folder(tmp_path / "b")
    for key in ("platt_a", "platt_b", "threshold"):  # an untrained model's logits span little: 0.1 steps tell
        assert b.metrics["calibration"][key] == pytest.approx(a.metrics["calibration"][key], rel=0.02, abs=0.01), key
    return calibrate, a, b


def test_cli_calibrates_from_stored_predictions_as_from_the_fold_models(tmp_path: Path, twelve_pairs: Path) -> None:
    """Each fold model's held-out predictions stored (``oof_predictions``), the fold models
    gone: the calibration read from the files is the one fitted with the fold models."""
    final = _folder(tmp_path / "final", IDS[:10], IDS[:2], seed=9, val_in_sample=True, step=7)
    folds = _fold_models(tmp_path)
    images = ["--images", str(twelve_pairs / "images"), "--masks", str(twelve_pairs / "masks")]
    stored = []
    for i, fold in enumerate(folds):
        f = tmp_path / "stored" / f"f{i}.npz"
        r = run_here([sys.executable, "-m", "lesionseg_training.oof_predictions", "--fold", str(fold), *images,
                            "--note", "tiny", "--out", str(f)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert f"4 held-out photos of {fold}" in r.stdout
        stored.append(f)
    calibrate, a, b = _from_folds_and_from_stored(tmp_path, final, folds, stored, images)
    assert b.metrics["calibration"]["fold_models"] == {str(stored[0]): IDS[0:4], str(stored[1]): IDS[4:8],
                                                       str(stored[2]): IDS[8:10]}
    assert b.metrics["review_fit"]["fit_images"] == a.metrics["review_fit"]["fit_images"] == 10
    assert (tmp_path / "b" / "weights.safetensors").read_bytes() == (final / "weights.safetensors").read_bytes()
    # a file that is not one, or a fold's file twice: the file and the problem, nothing written
    (tmp_path / "junk.npz").write_bytes(b"junk")
    for bad, problem in (([str(tmp_path / "junk.npz")], "not a stored-predictions file"),
                         ([str(stored[0]), str(stored[0])], "p00 is also held out")):
        r = run_here([*calibrate, "--predictions", *bad, "--out", str(tmp_path / "never")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and problem in r.stderr and bad[0] in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "never").exists()
    # a stored file is never replaced
    before = stored[0].read_bytes()
    r = run_here([sys.executable, "-m", "lesionseg_training.oof_predictions", "--fold", str(folds[0]), *images,
                        "--out", str(stored[0])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "already exists" in r.stderr and stored[0].read_bytes() == before


def test_compare_presets_keeps_each_fold_runs_predictions(tmp_path: Path, twelve_pairs: Path, capsys) -> None:
    """``compare_presets.py --store-predictions DIR``: a finished fold run's last model's
    predictions for its fold's photos go to DIR/<run>.npz, once."""
    import argparse

    from helpers import benchmark_module
    from lesionseg_training.oof_predictions import load_meta

    cp = benchmark_module("compare_presets")
    run = tmp_path / "runs" / cp.run_name("default", 1, None, 4000)
    _folder(run / "last", [p for p in IDS if p not in FOLDS[1]], FOLDS[1], seed=1, step=4000)
    pairs = find_pairs(DataConfig(images=str(twelve_pairs / "images"), masks=str(twelve_pairs / "masks")))
    args = argparse.Namespace(store_predictions=str(tmp_path / "kept"), steps=4000, minutes=10.0, seed=0, cache=None)
    cp.store_predictions(run, [p for p in pairs if p.id in FOLDS[1]], args, "default", 1)
    f = tmp_path / "kept" / f"{run.name}.npz"
    meta = load_meta(f)
    assert meta["photos"] == meta["held_out"] == FOLDS[1] and meta["step"] == 4000
    assert meta["note"].startswith("default, fold 1 of 5, 4000 steps, seed 0")
    before = f.read_bytes()
    cp.store_predictions(run, [], args, "default", 1)  # a resumed, finished run: the file is kept
    assert f.read_bytes() == before and "already there, kept" in capsys.readouterr().out


def test_compare_presets_composes_an_ensembles_fold_model_from_its_members_runs(tmp_path: Path, monkeypatch) -> None:
    """An ``ENSEMBLES`` variant trains nothing: its fold model is its members' fold runs'
    last models averaged, composed once; missing members are named; a folder composed from
    other weights than the members' runs now hold is refused and kept."""
    import argparse

    from helpers import benchmark_module

    cp = benchmark_module("compare_presets")
    monkeypatch.setitem(cp.ENSEMBLES, "pair", ["default", "default_dale"])
    args = argparse.Namespace(out=str(tmp_path / "runs"), noise=None, steps=4000, full_res=False)
    with pytest.raises(SystemExit, match=r"pair fold 1: its members' runs are not there .*default-f1-s4000"):
        cp.compose_fold_ensemble("pair", 1, args)
    runs = tmp_path / "runs"
    a = _folder(runs / "default-f1-s4000" / "last", [p for p in IDS if p not in FOLDS[1]], FOLDS[1], seed=1)
    with pytest.raises(SystemExit, match="default_dale-f1-s4000"):
        cp.compose_fold_ensemble("pair", 1, args)
    b = _folder(runs / "default_dale-f1-s4000" / "last", [p for p in IDS if p not in FOLDS[1]], FOLDS[1], seed=2)
    run = cp.compose_fold_ensemble("pair", 1, args)
    assert run == runs / "pair-f1-s4000"
    ens = load_model_folder(run / "last")
    assert ens.config.network.members == 2 and ens.config.inference.tta == "none"
    assert [m["weights_sha256"] for m in ens.lineage["members"]] == \
        [load_model_folder(f).config.weights_sha256 for f in (a, b)]
    assert sorted(ens.unseen_photos) == FOLDS[1]
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        want = (torch.sigmoid(load_model_folder(a).net(x).logits) + torch.sigmoid(load_model_folder(b).net(x).logits)) / 2
        assert torch.allclose(torch.sigmoid(ens.net(x).logits), want, atol=1e-5)
    before = (run / "last" / "weights.safetensors").read_bytes()
    assert cp.compose_fold_ensemble("pair", 1, args) == run  # composed once
    shutil.rmtree(b)
    _folder(b, [p for p in IDS if p not in FOLDS[1]], FOLDS[1], seed=3)  # a member retrained
    with pytest.raises(SystemExit, match="composed from other weights"):
        cp.compose_fold_ensemble("pair", 1, args)
    assert (run / "last" / "weights.safetensors").read_bytes() == before
    with pytest.raises(SystemExit, match="give --full-res"):
        cp.score_ensemble("pair", 1, args, tmp_path)


def test_a_photo_with_inputs_on_other_grids_is_predicted_as_their_mean() -> None:
    """``oof_predictions.predict`` on an item with extra grids' inputs (``on_grids``): the mean
    of the grids' probabilities on the model's grid, as inference averages them."""
    from lesionseg_training.oof_predictions import predict

    cfg = tiny_config()
    photo = _photo(0, right=0)
    coarse = np.full((4, 32, 32), 0.5, np.float32)  # channel 0: 0.5 everywhere on a grid half as fine
    fine = np.full((4, 96, 96), 0.3, np.float32)
    [alone] = predict(ProbIsChannel(0), cfg, [photo])
    [mean] = predict(ProbIsChannel(0), cfg, [(photo, [coarse, fine])])
    np.testing.assert_allclose(mean.probs[0], (alone.probs[0] + 0.5 + 0.3) / 3, atol=1e-5)
    np.testing.assert_array_equal(mean.labels, alone.labels)


def test_stored_predictions_on_extra_grids_calibrate_a_folder_that_runs_them(tmp_path: Path, twelve_pairs: Path) -> None:
    """``--extra-grids`` on ``oof_predictions`` and ``oof_calibrate``: the folds' predictions
    on the final model's grid and the extra grids calibrate a folder that runs those grids, as
    the fold models themselves would; predictions stored on other grids are refused by name."""
    final = _folder(tmp_path / "final", IDS[:10], IDS[:2], seed=9, val_in_sample=True, step=7)
    folds = _fold_models(tmp_path)
    images = ["--images", str(twelve_pairs / "images"), "--masks", str(twelve_pairs / "masks")]
    stored, plain = [], tmp_path / "plain.npz"
    for i, fold in enumerate(folds):
        f = tmp_path / "stored" / f"f{i}.npz"
        r = run_here([sys.executable, "-m", "lesionseg_training.oof_predictions", "--fold", str(fold), *images,
                            "--extra-grids", "96,176", "--out", str(f)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        stored.append(f)
    r = run_here([sys.executable, "-m", "lesionseg_training.oof_predictions", "--fold", str(folds[0]), *images,
                        "--out", str(plain)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    calibrate, a, b = _from_folds_and_from_stored(tmp_path, final, folds, stored, images, "--extra-grids", "96,176")
    assert a.config.inference.extra_grids == b.config.inference.extra_grids == [96, 176]
    r = run_here([*calibrate, "--predictions", str(plain), *map(str, stored[1:]), "--out", str(tmp_path / "never")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and str(plain) in r.stderr and "extra grids []" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "never").exists()
