"""The training-dynamics maps of ``benchmarks/snapshot_map.py`` (issue 12)."""

from __future__ import annotations

import numpy as np

from helpers import benchmark_module


def _photo_maps():
    return benchmark_module("snapshot_map").photo_maps


def test_a_pixel_the_checkpoints_disputed_ranks_above_one_they_agreed_on() -> None:
    """Two pixels with the same final probability (so the same entropy): the one earlier
    checkpoints called a lesion gets the higher label-free ER, spread and combined map."""
    photo_maps = _photo_maps()
    final = np.array([[0.02, 0.02, 0.9]], np.float32)
    mask = (final >= 0.5).astype(np.float32)
    snaps = [np.array([[0.7, 0.02, 0.9]], np.float32), np.array([[0.6, 0.01, 0.95]], np.float32)]
    m = photo_maps(final, mask, snaps)
    assert m["entropy"][0, 0] == m["entropy"][0, 1]
    for name in ("snap_er", "snap_spread", "entropy+snap_er", "snap_ae", "ensemble_entropy"):
        assert m[name][0, 0] > m[name][0, 1], name
    assert np.isclose(m["snap_er"][0, 0], (0.7 + 0.6) / 2)  # |p - mask| with the mask 0 there
    assert np.isclose(m["snap_er"][0, 2], (0.1 + 0.05) / 2)  # a found lesion: |p - 1|
    assert all(v.shape == final.shape for v in m.values())
