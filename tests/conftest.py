"""Shared fixtures: real IDRiD sample photos (from sample_data/), small copies of them, and
tiny model folders. Everything runs on the CPU; nothing reads ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_config
from napari_lesionseg.core.bundled import SAMPLES, sample_paths
from napari_lesionseg.core.model_folder import save_model_folder
from napari_lesionseg.core.models import build_model

torch.set_num_threads(2)
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = tiny_config()
    net = build_model(cfg.network)
    return save_model_folder(tmp_path_factory.mktemp("models") / "tiny", net, cfg, {"note": "random init"},
                             {"kind": "test"})


@pytest.fixture(scope="session")
def multi_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with every output, each a constant: hard exudate (p = 0.95) across the
    disc, every other type absent."""
    from helpers import TINY
    from napari_lesionseg.core.dataclass_io import from_dict
    from napari_lesionseg.core.model_config import ModelConfig

    cfg = from_dict(ModelConfig, {**TINY, "network": {**TINY["network"], "outputs": ["HE", "MA", "EX", "SE", "OD"]}})
    torch.manual_seed(0)
    net = build_model(cfg.network)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([-6.0, -6.0, 3.0, -6.0, -6.0]))
    return save_model_folder(tmp_path_factory.mktemp("models") / "multi", net, cfg, {}, {"kind": "test"})


@pytest.fixture(scope="session")
def small_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images/`` and ``masks/`` with the bundled samples downscaled 4x (536x356)."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for key in SAMPLES:
        img, mask = sample_paths(key)
        im = Image.open(img)
        size = (im.width // 4, im.height // 4)
        im.resize(size, Image.Resampling.BOX).save(root / "images" / img.name, quality=95)
        m = np.asarray(Image.open(mask)) > 0
        ms = np.asarray(Image.fromarray(m.astype(np.float32)).resize(size, Image.Resampling.BOX)) > 0.25
        Image.fromarray((ms * 255).astype(np.uint8)).save(root / "masks" / mask.name)
    return root


@pytest.fixture(scope="session")
def small_typed_pairs(tmp_path_factory: pytest.TempPathFactory, small_pairs: Path) -> Path:
    """``small_pairs`` with the samples' other masks beside the hemorrhage masks
    (``<stem>_MA.png``, ``_EX``, ``_SE`` (empty: neither photo has soft exudates), ``_OD``),
    downscaled 4x like them."""
    import shutil

    root = tmp_path_factory.mktemp("typed")
    shutil.copytree(small_pairs / "images", root / "images")
    shutil.copytree(small_pairs / "masks", root / "masks")
    for key in SAMPLES:
        img, _ = sample_paths(key)
        size = Image.open(root / "images" / img.name).size
        for t in ("MA", "EX", "SE", "OD"):
            m = np.asarray(Image.open(img.parent / f"{img.stem}_{t}.png")) > 0
            ms = np.asarray(Image.fromarray(m.astype(np.float32)).resize(size, Image.Resampling.BOX)) > 0.1
            Image.fromarray((ms * 255).astype(np.uint8)).save(root / "masks" / f"{img.stem}_{t}.png")
    return root


@pytest.fixture(scope="session")
def sample_rgb() -> np.ndarray:
    from napari_lesionseg.core.image_io import read_image

    rgb, _ = read_image(sample_paths("idrid_04")[0])
    return rgb
