"""Post-processing: threshold + minimum lesion area, and the lesion table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

FUZZY_CUTOFF = 0.5  # a pixel counts as fuzzy when its membership exceeds this


@dataclass(frozen=True)
class Lesion:
    """One connected lesion. Coordinates in input pixels: ``centroid_y/x``; bbox half-open
    ``[y0, y1) x [x0, x1)``. ``area_mm2`` is None without a calibration."""

    id: int
    area_px: int
    area_mm2: float | None
    centroid_y: float
    centroid_x: float
    y0: int
    x0: int
    y1: int
    x1: int
    mean_prob: float
    max_prob: float
    fuzzy_fraction: float

    def row(self) -> dict[str, float | int | None]:
        return asdict(self)


LESION_COLUMNS = list(Lesion.__dataclass_fields__)


def threshold_mask(prob: NDArray[np.float32], threshold: float, min_area: int,
                   fov: NDArray[np.bool_] | None = None) -> NDArray[np.uint8]:
    """``uint8`` 0/1 mask: ``prob > threshold``, components under ``min_area`` px removed."""
    m = prob > threshold
    if fov is not None:
        m &= fov
    if min_area > 1 and m.any():
        lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        small = sizes < min_area
        small[0] = False
        m[small[lab]] = False
    return m.astype(np.uint8)


def lesion_table(mask: NDArray, prob: NDArray[np.float32], fuzzy: NDArray[np.float32] | None = None,
                 mm_per_px: float | None = None) -> tuple[list[Lesion], NDArray[np.int32]]:
    """Label the mask's 8-connected components and describe each.

    Returns ``(lesions, labels)``: ``labels`` is ``int32 (H, W)`` with 0 = background and
    lesion ``i`` painted ``i`` (ids from 1, in raster order).
    """
    lab, n = ndimage.label(np.asarray(mask) == 1, structure=np.ones((3, 3), bool))
    lab = lab.astype(np.int32)
    if n == 0:
        return [], lab
    # statistics over lesion pixels only (a tiny fraction of a 12 Mpx photo)
    idx = np.flatnonzero(lab.ravel())
    ids = lab.ravel()[idx]
    p = prob.ravel()[idx].astype(np.float64)
    area = np.bincount(ids, minlength=n + 1).astype(np.float64)
    psum = np.bincount(ids, weights=p, minlength=n + 1)
    pmax = np.zeros(n + 1)
    np.maximum.at(pmax, ids, p)
    fz = (np.bincount(ids, weights=(fuzzy.ravel()[idx] > FUZZY_CUTOFF).astype(np.float64), minlength=n + 1)
          if fuzzy is not None else np.zeros(n + 1))
    yy, xx = np.divmod(idx, lab.shape[1])
    cy = np.bincount(ids, weights=yy.astype(np.float64), minlength=n + 1)
    cx = np.bincount(ids, weights=xx.astype(np.float64), minlength=n + 1)
    boxes = ndimage.find_objects(lab)
    out = []
    for i in range(1, n + 1):
        sl = boxes[i - 1]
        a = int(area[i])
        out.append(Lesion(
            id=i, area_px=a, area_mm2=None if mm_per_px is None else a * mm_per_px**2,
            centroid_y=float(cy[i] / a), centroid_x=float(cx[i] / a),
            y0=sl[0].start, x0=sl[1].start, y1=sl[0].stop, x1=sl[1].stop,
            mean_prob=float(psum[i] / a), max_prob=float(pmax[i]), fuzzy_fraction=float(fz[i] / a),
        ))
    return out, lab
