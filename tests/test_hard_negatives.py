"""Online hard-negative crops (``data.hard_negatives``): the training step's own false alarms are
remembered at their places on the photo, lesion borders are not counted as false alarms, later
background crops are centred on them, and a resumed run remembers what the first sitting did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import train_until
from lesionseg_training.data import PatchSampler, Prepared
from lesionseg_training.hard_negatives import FalseAlarms
from lesionseg_training.train_config import AugmentConfig, DataConfig, HardNegativeConfig, load_config
from lesionseg_training.trainer import train

SIDE = 200
FAR = 150 * SIDE + 120  # a false alarm far from the lesion
BORDER = 41 * SIDE + 30  # one just outside the lesion's edge (rows 20-39)


def _photo() -> Prepared:
    y = np.zeros((SIDE, SIDE), np.uint8)
    y[20:40, 20:40] = 1
    return Prepared("a", np.ones((4, SIDE, SIDE), np.float32), y, np.ones((SIDE, SIDE), bool))


def _sampler(share: float, n: int = 400) -> PatchSampler:
    aug = AugmentConfig(brightness=0, contrast=0, gaussian_noise_sigma=0)  # flips and turns stay on
    cfg = DataConfig(crop_size=32, batch_size=n, lesion_crop_fraction=0.0, augment=aug,
                     hard_negatives=HardNegativeConfig(share=share, threshold=0.5, margin=8))
    return PatchSampler([_photo()], cfg, seed=3)


def _predict(where: np.ndarray) -> torch.Tensor:
    """What a network 'predicts' on the crops: the photo's map below, looked up through each crop
    pixel's source (so flips and turns are followed)."""
    photo = np.zeros(SIDE * SIDE, np.float32)
    photo[BORDER] = 0.95  # the most confident, but on a lesion's border
    photo[FAR] = 0.8
    photo[100 * SIDE + 100] = 0.3  # below the threshold
    return torch.from_numpy(np.where(where >= 0, photo[np.maximum(where, 0)], 0.0))[:, None]


def test_false_alarms_are_remembered_on_the_photo_and_later_crops_centre_on_them() -> None:
    s = _sampler(share=1.0)
    _, y = s.batch()
    assert s.false_alarms is not None
    shows_far = (s.last_where.reshape(len(y), -1) == FAR).any(1)
    assert 3 <= shows_far.sum() < 40  # random crops: a few show the far pixel
    found = s.false_alarms.observe(_predict(s.last_where), torch.from_numpy(y), s.last_idx, s.last_where)
    assert found == shows_far.sum()  # each crop showing it, and nothing else (border, 0.3) remembered
    assert set(s.false_alarms.places[0]) == {FAR}

    _, y2 = s.batch()  # every crop is a background one, and the photo now has a false alarm to revisit
    assert (s.last_where.reshape(len(y2), -1) == FAR).any(1).all()

    ignored = s.false_alarms.observe(_predict(s.last_where), torch.from_numpy(y2), np.full(len(y2), 1),
                                     s.last_where)
    assert ignored == 0  # photo 1 would be a replay photo: not remembered


def test_the_option_off_keeps_no_memory_and_bad_settings_are_refused() -> None:
    assert _sampler(share=0.0, n=4).false_alarms is None
    assert FalseAlarms(1, HardNegativeConfig(share=0.5)).draw(0, np.random.default_rng(0)) is None
    memory = FalseAlarms(2, HardNegativeConfig(share=0.5, memory=3))
    memory.places[1].extend([1, 2, 3, 4])
    assert list(memory.places[1]) == [2, 3, 4]  # the last ``memory`` kept
    with pytest.raises(ValueError, match="this run trains on 3"):
        FalseAlarms(3, HardNegativeConfig(share=0.5)).load_state_dict(memory.state_dict())
    for bad in ("share=1.5", "threshold=0", "memory=0", "margin=-1"):
        with pytest.raises(ValueError, match="hard_negatives"):
            load_config("default", [f"data.hard_negatives.{bad}"])


def test_a_run_with_hard_negatives_resumes_what_it_remembered(tmp_path: Path, small_pairs: Path) -> None:
    cfg = load_config("tiny", [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                               "data.val_every=2", "run.steps=8", "run.eval_every=4",
                               "data.hard_negatives.share=0.5", "data.hard_negatives.threshold=0.01"])
    list(train(cfg, tmp_path / "straight"))
    train_until(cfg, tmp_path / "interrupted", 5)  # killed a step after a checkpoint
    first = torch.load(tmp_path / "interrupted" / "state.pt", weights_only=True)
    assert first["step"] == 4 and any(first["false_alarms"]["places"])
    list(train(cfg, tmp_path / "interrupted", resume=True))
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "state.pt", weights_only=True)
    assert a["false_alarms"] == b["false_alarms"] != first["false_alarms"]  # the second sitting remembered more
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
