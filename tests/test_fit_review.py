"""training/fit_review.py: the fuzzy map's error rate and the review rates, counted from a
model's own mistakes on annotated photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import tiny_config
from lesionseg_training.data import Prepared
from lesionseg_training.fit_review import fit_review
from napari_lesionseg.core.dataclass_io import from_dict, to_dict
from napari_lesionseg.core.fuzzy import fuzzy_map
from napari_lesionseg.core.model_config import ModelConfig
from napari_lesionseg.core.models.output import SegOutput


class ProbIsChannelZero(nn.Module):
    """A 'network' whose probability is its input's first channel (so a test sets it)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> SegOutput:
        p = x[:, :1].clamp(1e-6, 1 - 1e-6)
        return SegOutput(logits=torch.log(p / (1 - p)) + 0 * self.w)


def _photo(k: int) -> Prepared:
    """threshold 0.5. Found lesions (p 0.9), their rims (p 0.3, half annotated), a blob of p 0.2
    outside the mask that is a lesion in every other photo, a false alarm at p 0.6, a faint
    blob at p 0.04 that never is one."""
    h, w = 64, 96
    p = np.full((h, w), 1e-3, np.float32)
    y = np.zeros((h, w), np.uint8)
    p[8:20, 8:20] = 0.3
    p[10:18, 10:18] = 0.9
    y[10:18, 10:18] = 1
    y[8:20, 8:14] = np.where(p[8:20, 8:14] == 0.3, 1, y[8:20, 8:14])  # half the rim annotated
    p[40:50, 40:50] = 0.2
    if k % 2 == 0:
        y[42:48, 42:48] = 1
    p[40:48, 70:78] = 0.6
    p[20:24, 60:64] = 0.04
    x = np.stack([p, np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)])
    return Prepared(f"p{k}", x, y, np.ones((h, w), bool))


def test_fit_review_counts_the_models_mistakes() -> None:
    cfg = tiny_config(threshold=0.5)  # its stride pads the photos, as at inference
    new, figures = fit_review(ProbIsChannelZero(), cfg, [_photo(k) for k in range(20)])
    fz, rv = new.inference.fuzzy, new.inference.review
    assert fz.map == "error_rate" and figures["fit_images"] == 20
    rate = lambda q: float(fuzzy_map(np.array([q], np.float32), None, fz)[0])  # noqa: E731
    assert rate(1e-3) < 0.01 and 0.3 < rate(0.3) < 0.6 and rate(0.6) > 0.8 and rate(0.9) < 0.05  # smoothed toward the mean
    miss = lambda q: float(np.interp(q, *rv.missed_rate))  # noqa: E731
    fa = lambda q: float(np.interp(q, *rv.false_alarm_rate))  # noqa: E731
    assert miss(0.04) < 0.2 < 0.35 < miss(0.2)  # the 0.2 blob held a lesion in half the photos
    assert fa(0.6) > 0.7 and fa(0.9) < 0.3
    # what was fitted survives the config's own round trip and checks
    back = from_dict(ModelConfig, to_dict(new), "config")
    assert back.inference.fuzzy.error_rate == fz.error_rate and back.inference.review == rv


def test_fit_review_needs_photos() -> None:
    cfg = tiny_config()
    with pytest.raises(ValueError, match="at least one"):
        fit_review(ProbIsChannelZero(), cfg, [])


def test_training_fits_the_review_rates_on_its_training_photos(tmp_path, small_pairs, monkeypatch) -> None:
    """The trainer's last act: calibration on validation, then error and review rates on the
    training photos (enough of them: here the bar is lowered to the one training photo)."""
    import lesionseg_training.trainer as trainer
    from lesionseg_training.train_config import load_config
    from napari_lesionseg.core.model_folder import load_model_folder
    from napari_lesionseg.core.progress import run_to_end

    monkeypatch.setattr(trainer, "MIN_REVIEW_FIT_IMAGES", 1)
    cfg = load_config("tiny", [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                               "run.steps=2"])
    best = load_model_folder(run_to_end(trainer.train(cfg, tmp_path / "run")))
    assert best.config.inference.fuzzy.map == "error_rate" and best.metrics["review_fit"]["fit_images"] == 1
    # and it keeps training photos with lesions for fine-tunes to replay, never a validation photo
    from lesionseg_training.replay import replay_ids

    assert replay_ids(best.path) and not set(replay_ids(best.path)) & set(best.metrics["val_images"])
    monkeypatch.setattr(trainer, "MIN_REVIEW_FIT_IMAGES", 2)  # too few: the config keeps what it had
    best = load_model_folder(run_to_end(trainer.train(cfg, tmp_path / "run2")))
    assert best.config.inference.fuzzy.map == "entropy" and "review_fit" not in best.metrics
    assert replay_ids(best.path) == []


def test_the_fit_review_command_names_a_folder_that_is_no_model(tmp_path: Path, small_pairs: Path) -> None:
    """``python -m lesionseg_training.fit_review`` with ``--model`` a folder that holds no model:
    the folder and the problem in one line, exit code 2, no traceback, nothing written."""
    import sys

    from helpers import run_here

    (tmp_path / "not_a_model").mkdir()
    r = run_here([sys.executable, "-m", "lesionseg_training.fit_review", "--model", str(tmp_path / "not_a_model"),
                  "--images", str(small_pairs / "images"), "--masks", str(small_pairs / "masks"),
                  "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "not_a_model" in r.stderr
    assert not (tmp_path / "out").exists()
