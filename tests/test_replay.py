"""Replay photos: a model folder's own training photos that a fine-tune mixes into its crops
against forgetting; written, read back as training items, drawn by the sampler in their
share, carried into the fine-tuned version; a time-bound fine-tune and the base model's
calibration kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lesionseg_training.data import PatchSampler, prepare_pair
from lesionseg_training.finetune import Budget, fine_tune
from lesionseg_training.replay import load_replay, replay_ids, write_replay
from lesionseg_training.train_config import DataConfig
from napari_lesionseg.core.errors import LesionsegInputError
from napari_lesionseg.core.model_folder import load_model_folder
from napari_lesionseg.core.pairs import match_pairs
from napari_lesionseg.core.progress import run_to_end


@pytest.fixture()
def model_with_replay(tmp_path: Path, tiny_model_dir: Path, small_pairs: Path) -> Path:
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    write_replay(model, match_pairs(small_pairs / "images", small_pairs / "masks"),
                 load_model_folder(model).config.preprocess)
    return model


def test_replay_photos_read_back_as_the_training_items_they_were(model_with_replay: Path, small_pairs: Path) -> None:
    model = load_model_folder(model_with_replay)  # a folder with replay/ still loads
    assert replay_ids(model_with_replay) == ["IDRiD_04", "IDRiD_16"]
    items = load_replay(model_with_replay, model.config.preprocess)
    pair = next(p for p in match_pairs(small_pairs / "images", small_pairs / "masks") if p.id == "IDRiD_16")
    direct = prepare_pair(pair, model.config.preprocess)
    got = next(it for it in items if it.id == "IDRiD_16")
    assert got.x.shape == direct.x.shape and np.array_equal(got.y, direct.y) and np.array_equal(got.fov, direct.fov)
    assert (got.y == 1).any()
    assert np.allclose(got.x, direct.x, atol=1e-5)  # stored losslessly: the same network input


def test_the_sampler_draws_replay_crops_in_their_share(model_with_replay: Path, small_pairs: Path) -> None:
    pre = load_model_folder(model_with_replay).config.preprocess
    replay = load_replay(model_with_replay, pre)
    own = [prepare_pair(p, pre) for p in match_pairs(small_pairs / "images", small_pairs / "masks")][:1]
    cfg = DataConfig(crop_size=32, batch_size=200)
    for share, lo, hi in ((0.0, 0, 0), (1.0, 200, 200), (0.5, 70, 130)):
        sampler = PatchSampler(own, cfg, seed=3, replay=replay, replay_share=share)
        sampler.batch()
        drawn = int((sampler.last_idx >= len(own)).sum())
        assert lo <= drawn <= hi, (share, drawn)
        assert sampler.items == own  # fitting and DALE see the training images only


def test_a_time_bound_finetune_replays_keeps_the_calibration_and_passes_the_set_on(
        tmp_path: Path, model_with_replay: Path, small_pairs: Path) -> None:
    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    out = tmp_path / "v2"
    events: list[dict] = []
    run_to_end(fine_tune(model_with_replay, pairs, Budget(minutes=0.4), out), events.append)
    plan = events[0]
    assert plan["event"] == "plan" and plan["replay"] == 2
    budget = next(e for e in events if e["event"] == "training_budget")
    assert 0 < budget["seconds"] <= 0.4 * 60
    steps = [e["step"] for e in events if e["event"] == "step"]
    new = load_model_folder(out)
    assert new.metrics["steps"] == max(steps) >= 1  # the steps done, not the cap
    base = load_model_folder(model_with_replay)
    assert new.config.inference.threshold == base.config.inference.threshold
    assert new.config.inference.calibration == base.config.inference.calibration
    assert replay_ids(out) == replay_ids(model_with_replay)


def test_write_replay_refuses_a_folder_that_is_no_model(tmp_path: Path, small_pairs: Path, tiny_model_dir: Path) -> None:
    pre = load_model_folder(tiny_model_dir).config.preprocess
    with pytest.raises(LesionsegInputError, match="not a model folder"):
        write_replay(tmp_path, match_pairs(small_pairs / "images", small_pairs / "masks"), pre)


def test_the_shipped_models_carry_their_replay_photos() -> None:
    from napari_lesionseg.core.bundled import bundled_models

    for folder in bundled_models().values():
        ids = replay_ids(folder)
        model = load_model_folder(folder)
        assert len(ids) == 8 and not set(ids) & set(model.unseen_photos), folder  # training photos only
        assert set(ids) <= set(model.lineage["data"])
        credit = (folder / "replay" / "README.md").read_text()  # IDRiD's licence asks for it
        assert "CC BY 4.0" in credit and all(i.removeprefix("IDRiD_") in credit for i in ids), folder


def test_the_bundled_models_never_trained_on_the_sample_photos() -> None:
    """The photos a new user first segments (sample_data/) must be new to the shipped models,
    or the first result they see flatters them."""
    from lesionseg_sample_data import __file__ as sample_init

    from napari_lesionseg.core.bundled import default_model_dir

    samples = {f.stem for f in Path(sample_init).parent.glob("IDRiD_*.jpg")}
    assert samples == {"IDRiD_04", "IDRiD_16"}
    for folder in (default_model_dir(), default_model_dir().parent / "multi"):
        model = load_model_folder(folder)
        assert not samples & set(model.lineage["data"]) and samples <= set(model.unseen_photos), folder


def test_a_five_output_models_replay_keeps_every_known_type(tmp_path: Path, multi_model_dir: Path,
                                                          small_pairs: Path) -> None:
    """A five-output model's replay photos carry each type the annotation knows (so a fine-tune
    on hemorrhage corrections is held to the exudates it knew too); a type the photo's
    annotation lacks stays unknown (255), and a fine-tuned version carries the files on."""
    from PIL import Image

    from lesionseg_training.replay import copy_replay

    root = tmp_path / "pairs"
    shutil.copytree(small_pairs, root)
    he = next((root / "masks").glob("IDRiD_16*"))
    ex = np.zeros(np.asarray(Image.open(he)).shape[:2], np.uint8)
    ex[100:140, 200:260] = 255
    Image.fromarray(ex).save(root / "masks" / "IDRiD_16_EX.png")  # EX known for IDRiD_16 only
    model = tmp_path / "multi"
    shutil.copytree(multi_model_dir, model)
    cfg = load_model_folder(model).config
    outputs = cfg.network.outputs
    pairs = match_pairs(root / "images", root / "masks")
    write_replay(model, pairs[:1], cfg.preprocess, outputs)
    (model / "replay" / "README.md").write_text("credit")
    write_replay(model, pairs, cfg.preprocess, outputs)  # a new set keeps the photos' attribution
    assert (model / "replay" / "README.md").read_text() == "credit"
    assert replay_ids(model) == ["IDRiD_04", "IDRiD_16"]
    assert (model / "replay" / "IDRiD_16_EX_label.png").is_file()
    assert not (model / "replay" / "IDRiD_04_EX_label.png").exists()
    items = {it.id: it for it in load_replay(model, cfg.preprocess, outputs)}
    ex_row = list(outputs).index("EX") - 1
    direct = prepare_pair(next(p for p in pairs if p.id == "IDRiD_16"), cfg.preprocess, outputs=outputs)
    assert items["IDRiD_16"].aux.shape == direct.aux.shape
    assert np.array_equal(items["IDRiD_16"].aux[ex_row], direct.aux[ex_row]) and (direct.aux[ex_row] == 1).any()
    assert (items["IDRiD_04"].aux[ex_row] == 255).all()  # unknown there, not "no exudates"
    assert np.array_equal(items["IDRiD_16"].y, direct.y)
    dst = tmp_path / "next"
    dst.mkdir()
    copy_replay(model, dst)
    assert sorted(f.name for f in (dst / "replay").iterdir()) == sorted(f.name for f in (model / "replay").iterdir())


def test_guard_crops_are_fixed_and_centred_on_lesions(model_with_replay: Path) -> None:
    from lesionseg_training.replay import guard_crops

    items = load_replay(model_with_replay, load_model_folder(model_with_replay).config.preprocess)
    crops = guard_crops(items, size=64, per_photo=3, seed=0)
    assert len(crops) == 6 and all(c.x.shape[1:] == c.y.shape == c.fov.shape == (64, 64) for c in crops)
    assert all((c.y == 1).any() for c in crops)  # both photos have hemorrhages: every crop shows some
    again = guard_crops(items, size=64, per_photo=3, seed=0)
    assert [c.id for c in again] == [c.id for c in crops] and all(np.array_equal(a.x, b.x) for a, b in zip(again, crops))
    blank = [type(items[0])(items[0].id, items[0].x, np.zeros_like(items[0].y), items[0].fov)]
    assert all(c.fov.any() for c in guard_crops(blank, size=64, per_photo=2))  # no lesion: inside the disc


def test_the_forgetting_guard_keeps_the_base_when_every_checkpoint_fell(model_with_replay: Path, tmp_path: Path,
                                                                        small_pairs: Path) -> None:
    """``Budget.guard_margin``: a checkpoint whose replay-crop AUPR fell more than the margin
    below the base's is never chosen; a margin nothing can exceed changes nothing."""
    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")
    runs = {}
    for name, margin in (("none", None), ("loose", 1.0), ("strict", -1.0)):
        events: list[dict] = []
        budget = Budget(steps=6, lr=5e-3, hold_out=False, guard_margin=margin)
        runs[name] = (run_to_end(fine_tune(model_with_replay, pairs, budget, tmp_path / name, threads=1),
                                 events.append), events)
    evals = [e for e in runs["strict"][1] if e["event"] == "eval"]
    assert evals[0]["step"] == 0 and evals[0]["guard_ok"] and all(not e["guard_ok"] for e in evals[1:])
    strict = load_model_folder(runs["strict"][0])
    assert strict.metrics["best_step"] == 0 and strict.metrics["forgetting_guard"]["margin"] == -1.0
    assert strict.config.weights_sha256 == load_model_folder(model_with_replay).config.weights_sha256
    assert all("guard_ok" not in e for e in runs["none"][1] if e["event"] == "eval")
    loose, plain = load_model_folder(runs["loose"][0]), load_model_folder(runs["none"][0])
    assert loose.metrics["best_step"] == plain.metrics["best_step"] > 0  # unguarded, a trained checkpoint won
    assert loose.config.weights_sha256 == plain.config.weights_sha256


def test_the_replay_command_adds_the_models_own_photos_with_lesions(tmp_path: Path, tiny_model_dir: Path,
                                                                    small_pairs: Path) -> None:
    """``python -m lesionseg_training.replay``: photos with lesions among the folder's training
    photos go into its replay set; when none has a lesion, the error names the folder and the
    problem (no traceback) and nothing is written."""
    import sys

    from PIL import Image

    from helpers import run_here

    def replay(model: Path, pairs: Path, *more: str):
        return run_here([sys.executable, "-m", "lesionseg_training.replay", "--model", str(model),
                         "--images", str(pairs / "images"), "--masks", str(pairs / "masks"), *more],
                        capture_output=True, text=True, timeout=300)

    model = shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    r = replay(model, small_pairs, "--n", "1")
    assert r.returncode == 0, r.stderr
    assert len(replay_ids(model)) == 1 and r.stdout.startswith("1 replay photos in")
    empty = shutil.copytree(small_pairs, tmp_path / "empty")
    for m in (empty / "masks").iterdir():
        Image.new("L", Image.open(m).size).save(m)
    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    r = replay(other, empty)
    assert r.returncode == 2 and "no photo with lesions" in r.stderr and str(empty / "images") in r.stderr
    assert replay_ids(other) == [] and not (other / "replay").exists()
