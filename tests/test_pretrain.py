"""Self-supervised in-painting on unannotated photos (training/pretrain.py): only blanked pixels
inside the disc are scored, the blocks cover what they should, a run resumes exactly, its model
folder keeps the learnt weights with a fresh segmentation head, and training starts from it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_here
from lesionseg_training.pretrain import blank_blocks, inpainting_loss, pretrain


def test_blocks_cover_the_share_asked_for_and_differ_by_crop() -> None:
    rng = np.random.default_rng(0)
    b = blank_blocks((4, 64, 64), 0.35, 4, 12, rng)
    cover = b.reshape(4, -1).mean(1)
    assert (cover >= 0.35).all() and (cover < 0.6).all()
    assert not np.array_equal(b[0], b[1])


def test_only_blank_pixels_inside_the_disc_are_scored() -> None:
    x = torch.randn(1, 4, 8, 8)
    x[..., :, :2] = 0  # outside the disc: every channel 0
    blank = torch.zeros(1, 8, 8, dtype=torch.bool)
    blank[0, 2:6, :4] = True  # half of these 16 pixels lie outside the disc
    recon = torch.full_like(x, 9.0)
    recon[..., 2:6, 2:4] = x[..., 2:6, 2:4]  # right on the blank pixels inside the disc, wrong everywhere else
    assert float(inpainting_loss(recon, x, blank)) == 0.0
    recon[0, 1, 3, 3] += 2.0  # one channel of one scored pixel off by 2
    assert float(inpainting_loss(recon, x, blank)) == pytest.approx(4.0 / (8 * 4))


def _cfg(steps: int, *extra: str):
    from lesionseg_training.train_config import load_config

    return load_config("tiny", [f"run.steps={steps}", "run.amp=false", "run.log_every=5", "optim.warmup_steps=2", *extra])


def _run(cfg, photos: Path, out: Path, **kw) -> list[dict]:
    return list(pretrain(cfg, photos, out, **kw))


def test_a_run_learns_to_inpaint_and_keeps_a_fresh_head(small_pairs: Path, tmp_path: Path) -> None:
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.models import build_model

    events = _run(_cfg(60), small_pairs / "images", tmp_path / "run", block=(2, 6))
    done = events[-1]
    assert done["event"] == "done" and events[0] == {"event": "photos", "photos": 2, "left_out": 0}
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])  # it learns: the blanked pixels are predicted better
    m = load_model_folder(done["model"])
    torch.manual_seed(0)
    fresh = build_model(m.config.network)
    for name, t in m.net.state_dict().items():
        if name.startswith("head."):  # untouched: as a new network's, built from the same seed
            assert torch.equal(t, fresh.state_dict()[name])
        elif name.startswith("down.0.") and name.endswith("weight") and t.ndim == 4:
            assert not torch.allclose(t, fresh.state_dict()[name])  # the first convolution learnt
    assert m.lineage["pretrained"]["photos"] == 2
    with pytest.raises(FileExistsError, match="finished"):
        _run(_cfg(40), small_pairs / "images", tmp_path / "run")


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(small_pairs: Path, tmp_path: Path) -> None:
    from napari_lesionseg.core.model_folder import load_model_folder

    whole = _run(_cfg(12), small_pairs / "images", tmp_path / "whole")[-1]
    part = tmp_path / "part"
    for ev in pretrain(_cfg(12, "run.log_every=1"), small_pairs / "images", part, state_every=3):
        if ev.get("step") == 7:  # stopped during its 8th step: the state of step 6 is there
            break
    with pytest.raises(FileExistsError, match="--resume"):
        _run(_cfg(12), small_pairs / "images", part)
    with pytest.raises(ValueError, match="its own settings"):
        _run(_cfg(12), small_pairs / "images", part, resume=True, mask_share=0.5)
    with pytest.raises(ValueError, match="its network is not.*its own settings"):
        _run(_cfg(12, "model.network.widths=[8, 16, 32]"), small_pairs / "images", part, resume=True)
    resumed = _run(_cfg(12), small_pairs / "images", part, resume=True)[-1]
    a = load_model_folder(whole["model"]).net.state_dict()
    b = load_model_folder(resumed["model"]).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_copies_of_annotated_photos_are_left_out_and_none_left_is_an_error(small_pairs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no photos to pretrain on.*2 left out"):
        _run(_cfg(4), small_pairs / "images", tmp_path / "run", not_like=small_pairs / "images")
    with pytest.raises(ValueError, match="built for 'unet_small'"):
        from lesionseg_training.train_config import load_config

        _run(load_config("dynsegnet_small"), small_pairs / "images", tmp_path / "run2")


def test_training_starts_from_the_pretrained_folder(small_pairs: Path, tmp_path: Path) -> None:
    """The real CLIs: the pretraining's folder is a warm start for ``lesionseg train --init``."""
    pre = tmp_path / "pre"
    r = run_here([sys.executable, "-m", "lesionseg_training.pretrain", "--unlabelled",
                        str(small_pairs / "images"), "--out", str(pre), "--config", "tiny", "--steps", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = run_here([sys.executable, "-m", "napari_lesionseg.cli", "train", "--config", "tiny", "--images",
                        str(small_pairs / "images"), "--masks", str(small_pairs / "masks"), "--steps", "2",
                        "--init", str(pre / "pretrained"), "--out", str(tmp_path / "run"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"parent_path"' in next((tmp_path / "run").rglob("lineage.json")).read_text()


def test_a_pretrained_variant_needs_its_weights(tmp_path: Path) -> None:
    """``compare_presets.py``: ``default_inpaint`` starts from ``--init`` and refuses to run
    without it (a run from random weights under its name would be the baseline)."""
    import argparse

    from helpers import benchmark_module
    from lesionseg_training.train_config import load_config
    from napari_lesionseg.core.dataclass_io import ConfigError
    from napari_lesionseg.core.model_folder import save_model_folder
    from napari_lesionseg.core.models import build_model

    cp = benchmark_module("compare_presets")
    cfg = load_config("tiny")
    assert cp.pretrained_init("default", argparse.Namespace(init=None), cfg) is None
    with pytest.raises(SystemExit, match="--init"):
        cp.pretrained_init("default_inpaint", argparse.Namespace(init=None), cfg)
    with pytest.raises(Exception, match="nowhere"):
        cp.pretrained_init("default_inpaint", argparse.Namespace(init=str(tmp_path / "nowhere")), cfg)
    folder = save_model_folder(tmp_path / "m", build_model(cfg.model.network), cfg.model)
    assert cp.pretrained_init("default_inpaint", argparse.Namespace(init=str(folder)), cfg) is not None
    other = load_config("tiny", ["model.preprocess.fov_diameter=96"])
    with pytest.raises(ConfigError, match="model.preprocess differs"):
        cp.pretrained_init("default_inpaint", argparse.Namespace(init=str(folder)), other)
