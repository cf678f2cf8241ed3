"""``benchmarks/lesions_by_ring.py``'s count: marked lesions that touch an annotation and
annotated lesions the mask touches, each in the ring of the round field its centroid lies in."""

from __future__ import annotations

import numpy as np

from helpers import benchmark_module
from napari_lesionseg.core.anatomy import Anatomy
from napari_lesionseg.core.lesions import lesion_table


def test_lesions_are_counted_in_their_ring() -> None:
    rings = benchmark_module("lesions_by_ring")
    field = Anatomy(field=(150.0, 150.0, 150.0))  # centre (150, 150), radius 150 px
    gt = np.zeros((300, 300), bool)
    gt[145:155, 145:155] = True  # at the centre: ring 0
    gt[145:150, 290:296] = True  # 0.95 of the radius: the last ring, missed
    gt[20:26, 150:156] = True  # 0.85: ring 2, found
    mask = np.zeros((300, 300), np.uint8)
    mask[148:160, 148:160] = 1  # overlaps the centre's annotation
    mask[22:24, 152:154] = 1  # inside the ring-2 annotation
    mask[150:156, 5:11] = 1  # at the rim, nothing annotated there: a false alarm
    mask[100:104, 100:104] = 1  # 0.45, nothing annotated: a false alarm in ring 0
    lesions, labels = lesion_table(mask, mask.astype(np.float32))
    counts = rings.count_by_ring(lesions, labels, gt, field)
    # rows: marked, marked right, annotated, annotated found; columns: 0-0.5, 0.5-0.8, 0.8-0.9, 0.9-
    np.testing.assert_array_equal(counts, [[2, 0, 1, 1], [1, 0, 1, 0], [1, 0, 1, 1], [1, 0, 1, 0]])
