"""Issue 12's fuzzy head: trained with the network to predict where its own hemorrhage mask is
wrong, and shown as the fuzzy map (``network.error_head``, ``inference.fuzzy.map = "head"``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY, tiny_config
from lesionseg_training.losses import error_head_loss
from lesionseg_training.train_config import load_config
from napari_lesionseg.core.dataclass_io import ConfigError, from_dict
from napari_lesionseg.core.inference import predict
from napari_lesionseg.core.model_config import FuzzyConfig, ModelConfig
from napari_lesionseg.core.model_folder import LoadedModel, load_model_folder
from napari_lesionseg.core.models import build_model
from napari_lesionseg.core.progress import run_to_end


def _head_config(**inference: object) -> ModelConfig:
    return from_dict(ModelConfig, {**TINY, "network": {**TINY["network"], "error_head": True},
                                   "inference": {**TINY["inference"], **inference}})


def test_the_head_map_needs_a_head_and_the_head_a_unet_small() -> None:
    with pytest.raises(ConfigError, match="inference.fuzzy.map"):
        tiny_config(fuzzy={"map": "head"})
    with pytest.raises(ConfigError, match="network.error_head"):
        from_dict(ModelConfig, {**TINY, "network": {"arch": "segan_segmentor", "in_channels": 4,
                                                    "error_head": True}})
    assert tiny_config().network.error_head is False  # configs written before the head load as before
    assert build_model(tiny_config().network)(torch.zeros(1, 4, 32, 32)).error_logits is None
    out = build_model(_head_config().network)(torch.zeros(2, 4, 32, 32))
    assert out.error_logits.shape == out.logits.shape == (2, 1, 32, 32)


def test_the_heads_target_is_where_this_steps_mask_is_wrong_on_valid_pixels() -> None:
    he = torch.tensor([[[[3.0, 3.0, -3.0, -3.0, 3.0]]]], requires_grad=True)  # mask: 1 1 0 0 1
    y = torch.tensor([[[1, 0, 1, 0, 255]]], dtype=torch.uint8)  # right, false alarm, miss, right, ignored
    err = torch.zeros(1, 1, 1, 5, requires_grad=True)
    loss, wrong = error_head_loss(err, he[:, 0], y, 0.5)
    assert wrong[0, 0].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    loss.backward()
    g = err.grad[0, 0, 0]
    assert g[1] < 0 and g[2] < 0 and g[0] > 0 and g[3] > 0  # up where wrong, down where right
    assert g[4] == 0  # an ignored pixel teaches nothing
    assert he.grad is None  # the mask's logits get no gradient from the head's loss
    _, at_09 = error_head_loss(err, torch.full((1, 1, 5), 1.0), y, 0.9)  # p = 0.73: no mask at 0.9
    assert at_09[0, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_the_fuzzy_map_is_the_heads_probability() -> None:
    cfg = _head_config(fuzzy={"map": "head"}, tta="flips")
    net = build_model(cfg.network).eval()
    with torch.no_grad():
        net.error_head.weight.zero_()
        net.error_head.bias.fill_(float(np.log(0.3 / 0.7)))
    rgb = np.zeros((160, 240, 3), np.uint8)
    yy, xx = np.mgrid[:160, :240]
    rgb[(yy - 80) ** 2 + (xx - 120) ** 2 < 70 ** 2] = (150, 80, 40)
    pred = run_to_end(predict(LoadedModel(net, cfg, None), rgb))
    from scipy import ndimage

    interior = ndimage.binary_erosion(pred.geometry.input_fov_mask(), iterations=8)
    assert np.allclose(pred.fuzzy[interior], 0.3, atol=1e-4)
    entropy_cfg = replace(cfg, inference=replace(cfg.inference, fuzzy=FuzzyConfig()))
    plain = run_to_end(predict(LoadedModel(net, entropy_cfg, None), rgb))
    assert not np.allclose(plain.fuzzy[interior], 0.3, atol=1e-2)  # the same network without the head map


def test_a_run_trains_the_head_and_its_model_folder_shows_it(tmp_path: Path, small_pairs: Path) -> None:
    """Two runs alike but for the head's loss weight: with it the head's weights move away from
    where the same seed started them (without it, nothing trains the head); the model folder
    keeps the head and shows it as the fuzzy map (the review-rate fit after training keeps it)."""
    from lesionseg_training.trainer import train

    heads = {}
    for weight in (0.0, 0.2):
        cfg = load_config("tiny", [f'data.images="{small_pairs / "images"}"', f'data.masks="{small_pairs / "masks"}"',
                                   "run.steps=6", "run.eval_every=6", "run.log_every=1",
                                   "model.network.error_head=true", 'model.inference.fuzzy.map="head"',
                                   f"loss.error_head_weight={weight}"])
        events = list(train(cfg, tmp_path / f"run{weight}"))
        logged = [ev["error_head"] for ev in events if ev.get("event") == "step" and "error_head" in ev]
        assert len(logged) == 6 and all(np.isfinite(logged))
        model = load_model_folder(tmp_path / f"run{weight}" / "last")
        assert model.config.network.error_head and model.config.inference.fuzzy.map == "head"
        heads[weight] = model.net.state_dict()["error_head.weight"]
    assert not torch.equal(heads[0.0], heads[0.2])

