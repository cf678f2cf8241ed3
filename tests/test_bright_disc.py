"""``benchmarks/bright_disc.py``'s detector on a real photo: the bundled samples' optic discs
(their own disc masks) found within half a disc diameter; a fundus with the bright spot moved
is followed there (the detector looks at the photo, not at a fixed place)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from helpers import benchmark_module
from napari_lesionseg.core.bundled import sample_paths
from napari_lesionseg.core.image_io import read_image, read_mask
from napari_lesionseg.core.preprocess import mask_to_work, prepare


@pytest.mark.parametrize("key", ["idrid_04", "idrid_16"])
def test_the_brightest_disc_sized_blob_is_the_disc(key: str) -> None:
    bright = benchmark_module("bright_disc")
    img, _ = sample_paths(key)
    rgb, _ = read_image(img)
    x, geom, disc = prepare(rgb, 832, 24.0)
    od = mask_to_work(read_mask(img.parent / f"{img.stem}_OD.png", shape=rgb.shape[:2]), geom) > 0.5
    dd = 2 * math.sqrt(float(od.sum()) / math.pi)
    fd = 2 * geom.fov.radius * geom.scale[1]
    found = bright.bright_disc(x, disc, fd)
    assert math.dist(found, ndimage.center_of_mass(od)) < 0.5 * dd
    flipped = bright.bright_disc(np.ascontiguousarray(x[:, :, ::-1]), np.ascontiguousarray(disc[:, ::-1]), fd)
    assert abs(flipped[1] - (x.shape[2] - 1 - found[1])) < 0.5 * dd  # the mirrored photo's disc is mirrored
