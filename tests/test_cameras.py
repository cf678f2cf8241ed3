"""Simulated cameras (training/cameras.py) and training through them (``data.cameras``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import benchmark_module
from lesionseg_training.cameras import IDENTITY, Camera, shoot, shoot_at_size
from lesionseg_training.data import PatchSampler, Prepared, camera_views, photo_cameras
from lesionseg_training.train_config import AugmentConfig, CameraAugConfig, DataConfig, load_config
from lesionseg_training.trainer import prepare_items
from napari_lesionseg.core.dataclass_io import ConfigError, from_dict
from napari_lesionseg.core.pairs import match_pairs


def _photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(20, 230, size=(60, 80, 3), dtype=np.uint8)


def test_the_identity_camera_changes_nothing_and_a_camera_changes_what_it_says() -> None:
    rgb = _photo()
    assert np.array_equal(shoot(rgb, IDENTITY), rgb)
    small = shoot(rgb, IDENTITY._replace(scale=0.5))
    assert small.shape == (30, 40, 3)
    assert shoot_at_size(rgb, IDENTITY._replace(scale=0.5)).shape == rgb.shape
    dark = shoot(rgb, IDENTITY._replace(bright=0.5)).astype(float)
    assert abs(dark.mean() - rgb.mean() / 2) < 1.0
    warm = shoot(rgb, IDENTITY._replace(gains=(1.2, 1.0, 0.6))).astype(float)
    assert warm[..., 0].mean() > rgb[..., 0].mean() and warm[..., 2].mean() < 0.65 * rgb[..., 2].mean()
    vig = shoot(rgb, IDENTITY._replace(vignette=0.5)).astype(float) - rgb
    assert abs(vig[28:32, 38:42].mean()) < 1.0 and vig[:5, :5].mean() < -20  # the corners darken, not the centre
    blurred = shoot(rgb, IDENTITY._replace(blur=2.0)).astype(float)
    assert blurred.std() < 0.5 * rgb.std()  # random pixels average out
    assert shoot(rgb, IDENTITY._replace(quality=20)).shape == rgb.shape


def test_each_photo_has_its_own_cameras_the_same_in_every_run_and_within_the_ranges() -> None:
    cfg = CameraAugConfig(share=0.5, versions=3)
    a, b = photo_cameras("IDRiD_01", cfg), photo_cameras("IDRiD_02", cfg)
    assert a == photo_cameras("IDRiD_01", cfg) and a != b and len(a) == 3
    assert photo_cameras("IDRiD_01", CameraAugConfig(share=0.5, versions=3, seed=1)) != a
    for cam in (photo_cameras(f"p{i}", cfg)[0] for i in range(200)):
        assert isinstance(cam, Camera)
        assert cfg.scale[0] <= cam.scale <= cfg.scale[1] and cfg.gamma[0] <= cam.gamma <= cfg.gamma[1]
        assert all(cfg.gains[0] <= g <= cfg.gains[1] for g in cam.gains)
        assert cam.blur == 0 or cfg.blur[0] <= cam.blur <= cfg.blur[1]
        assert cfg.quality[0] <= cam.quality <= cfg.quality[1]


def test_a_bad_camera_range_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="data.cameras.share"):
        CameraAugConfig(share=1.5)
    with pytest.raises(ConfigError, match="data.cameras.gamma"):
        from_dict(DataConfig, {"cameras": {"gamma": [1.4, 0.75]}})


def test_crops_come_from_the_camera_views_as_often_as_the_share_says() -> None:
    x = np.zeros((4, 100, 120), np.float32)
    views = (np.ones((4, 100, 120), np.float16), np.full((4, 100, 120), 2, np.float16))
    fov = np.zeros((100, 120), bool)
    fov[20:80, 20:100] = True  # crops (centred inside) never reach past the photo's edge
    item = Prepared("a", x, np.zeros((100, 120), np.uint8), fov, views=views)
    off = AugmentConfig(brightness=0, contrast=0, gaussian_noise_sigma=0)

    def sources(share: float) -> np.ndarray:
        cfg = DataConfig(crop_size=16, batch_size=400, augment=off, cameras=CameraAugConfig(share=share))
        xb, _ = PatchSampler([item], cfg, seed=0).batch()
        return xb[:, 0, 8, 8]

    assert set(sources(0.0)) == {0.0}
    s = sources(0.5)
    assert set(s) == {0.0, 1.0, 2.0}
    assert 0.4 < (s > 0).mean() < 0.6 and 0.35 < (s == 2).sum() / (s > 0).sum() < 0.65
    assert set(sources(1.0)) == {1.0, 2.0}


def test_training_photos_get_their_camera_views_on_the_clean_grid_and_from_the_cache(
        small_pairs: Path, tmp_path: Path) -> None:
    pairs = match_pairs(small_pairs / "images", small_pairs / "masks")[:1]
    cfg = load_config("tiny", [f'data.cache_dir="{tmp_path}"', "data.cameras.share=0.5",
                               "data.cameras.versions=2"])
    clean = prepare_items(pairs, cfg)
    assert clean[0].views == ()  # validation photos: clean only
    (item,) = prepare_items(pairs, cfg, cameras=True)
    assert len(item.views) == 2
    for v in item.views:
        assert v.shape == item.x.shape and v.dtype == np.float16
        assert not np.any(v[:, ~item.fov])  # zero outside the clean disc, like x
        inside = v[:, item.fov].astype(np.float32)
        assert np.abs(inside[:3].mean(1)).max() < 0.05  # standardised inside the disc as inference does
        assert np.abs(inside - item.x[:, item.fov]).mean() > 0.05  # and not the clean photo
    cached = sorted(tmp_path.glob("*-cams-*.npz"))
    assert len(cached) == 1
    # the run that fills the cache trains on what every later run reads back (x is kept as float16)
    (reread,) = prepare_items(pairs, cfg)
    assert np.array_equal(reread.x, clean[0].x) and np.array_equal(reread.y, clean[0].y)
    again = camera_views(pairs[0], cfg.model.preprocess, cfg.data.cameras, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(again, item.views))
    other = load_config("tiny", [f'data.cache_dir="{tmp_path}"', "data.cameras.share=0.5",
                                 "data.cameras.versions=2", "data.cameras.seed=3"])
    camera_views(pairs[0], other.model.preprocess, other.data.cameras, tmp_path)
    assert len(list(tmp_path.glob("*-cams-*.npz"))) == 2  # other cameras, another cache file


def test_a_cameras_ablation_takes_each_part_alone_and_away() -> None:
    adapt = benchmark_module("adapt")
    b = adapt.CAMERAS["B"]
    abl = adapt.ablations(b)
    assert set(abl) == {f"{w} {p}" for p in adapt.PARTS for w in ("only", "without")}
    assert abl["only colour"] == IDENTITY._replace(gains=b.gains, bright=b.bright)
    assert abl["only JPEG"] == IDENTITY._replace(quality=b.quality, scale=b.scale)  # JPEG at the camera's size
    assert abl["without JPEG"] == b._replace(quality=100)
    assert abl["without size"] == b._replace(scale=1.0)
    assert "only blur" not in adapt.ablations(adapt.CAMERAS["A"])  # A is sharp: nothing to take away


def test_one_fixed_camera_for_every_photo_is_the_benchmarks_camera() -> None:
    """``data.cameras.fixed``: every photo through one given camera (e.g. benchmarks/adapt.py's
    camera B, to train a network on that camera alone); a malformed one is refused by name."""
    from helpers import benchmark_module

    b = benchmark_module("adapt").CAMERAS["B"]
    cfg = load_config("tiny", ["data.cameras.share=1.0", "data.cameras.versions=1",
                               "data.cameras.fixed=[0.45, [1.15, 0.9, 0.75], 0.75, 1.3, 1.5, 0.4, 30]"])
    assert photo_cameras("IDRiD_01", cfg.data.cameras) == photo_cameras("p7", cfg.data.cameras) == [b]
    more = load_config("tiny", ["data.cameras.versions=3", "data.cameras.fixed=[0.45, [1.15, 0.9, 0.75], 0.75, 1.3, "
                                                           "1.5, 0.4, 30]"])
    assert photo_cameras("p7", more.data.cameras) == [b]  # one camera, prepared once
    for bad in ("[0.45, 0.75, 1.3]", "[0.45, [1.15, 0.9], 0.75, 1.3, 1.5, 0.4, 30]",
                "[2.0, [1.0, 1.0, 1.0], 1.0, 1.0, 0.0, 0.0, 90]", '[0.5, [1, 1, 1], 1, 1, 0, 0, "x"]',
                "[0.5, [1, 1, 9.0], 1, 1, 0, 0, 90]", "[0.5, [1, 1, 1], 1, 1, 0, true, 90]"):
        with pytest.raises(ConfigError, match="data.cameras.fixed"):
            load_config("tiny", [f"data.cameras.fixed={bad}"])
