"""Post-processing: threshold + minimum lesion area, and the lesion table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .anatomy import Anatomy

FUZZY_CUTOFF = 0.5  # a pixel counts as fuzzy when its membership exceeds this


@dataclass(frozen=True)
class Lesion:
    """One connected lesion. Coordinates in input pixels: ``centroid_y/x``; bbox half-open
    ``[y0, y1) x [x0, x1)``. ``area_mm2`` is None without a calibration. ``type`` is the
    lesion type (core/lesion_types.py); ``od_distance_dd`` (distance of the centroid from the
    optic-disc centre in disc diameters) and ``zone`` (core/anatomy.py) are None when the disc
    is not known; ``field_r`` (the centroid's distance from the centre of the photo's round field
    of view as a share of its radius, core/anatomy.py) is None for a photo without one."""

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
    type: str = "HE"
    od_distance_dd: float | None = None
    zone: str | None = None
    field_r: float | None = None

    def located(self, anatomy: Anatomy) -> Lesion:
        """This lesion with its disc-relative distance, zone and place in the field of view."""
        d = anatomy.od_distance_dd(self.centroid_y, self.centroid_x)
        r = anatomy.field_r(self.centroid_y, self.centroid_x)
        return replace(self, od_distance_dd=None if d is None else round(d, 3),
                       zone=anatomy.zone(self.centroid_y, self.centroid_x), field_r=None if r is None else round(r, 3))

    def row(self) -> dict[str, float | int | None]:
        return asdict(self)


LESION_COLUMNS = list(Lesion.__dataclass_fields__)


def threshold_mask(prob: NDArray[np.float32], threshold: float, min_area: int,
                   fov: NDArray[np.bool_] | None = None) -> NDArray[np.uint8]:
    """``uint8`` 0/1 mask: ``prob > threshold``, components under ``min_area`` px removed."""
    m = prob > threshold
    if fov is not None:
        m &= fov
    if min_area <= 1:
        return m.view(np.uint8)
    return _labelled(m, min_area)[0]


def label_runs(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int, NDArray[np.intp], NDArray[np.int32]]:
    """8-connected components of a sparse 2-D mask, found on its row runs instead of its pixels.

    Returns ``(labels, n, idx, ids)``: ``labels`` int32 as ``scipy.ndimage.label(mask, ones((3, 3)))``
    (the same ids: raster order of each component's first pixel), ``idx`` the flat indices of
    the mask's pixels in raster order and ``ids`` their labels. A lesion mask covers about 1 % of
    a photo, so working on runs (a few thousand) costs a fraction of a pixel-wise pass.
    Kept by hand because the libraries are slower in this hot path: the whole lesion table of
    a full-size IDRiD mask took 32 ms here against 219 ms with scikit-image's ``label`` +
    ``regionprops_table`` and 71 ms for ``scipy.ndimage.label`` alone, with identical tables
    (``benchmarks/lesion_table_speed.py``; the tests check it against scikit-image).
    """
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    idx = np.flatnonzero(np.ascontiguousarray(mask, dtype=bool))
    n, ids = run_components(idx, w)
    labels.ravel()[idx] = ids
    return labels, n, idx, ids


def run_components(idx: NDArray[np.intp], w: int) -> tuple[int, NDArray[np.int32]]:
    """The 8-connected components of the pixels at flat indices ``idx`` (ascending) of an image
    ``w`` px wide: ``(n, ids)``, ids numbered in raster order of each component's first pixel
    (:func:`label_runs` without its label image: a count costs the lesion pixels, not the photo)."""
    if idx.size == 0:
        return 0, np.zeros(0, np.int32)
    # A run starts at a pixel whose left neighbour (in the same row) is off; it ends likewise.
    y, x = np.divmod(idx, w)
    gap = np.empty(idx.size, bool)
    gap[0] = True
    np.not_equal(np.diff(idx), 1, out=gap[1:])
    gap[1:] |= x[1:] == 0
    first = np.flatnonzero(gap)
    last = np.append(first[1:], idx.size) - 1
    ry, r0, r1 = y[first], x[first], x[last] + 1  # run: row, [start, end)
    # Runs in consecutive rows touch (8-connected) when start_b <= end_a and start_a <= end_b.
    stride = w + 2
    end_key, start_key = ry * stride + r1, ry * stride + r0
    lo = np.searchsorted(end_key, (ry - 1) * stride + r0, side="left")
    hi = np.searchsorted(start_key, (ry - 1) * stride + r1, side="right") - 1
    count = np.maximum(hi - lo + 1, 0)
    src = np.repeat(np.arange(first.size), count)
    dst = np.repeat(lo, count) + (np.arange(src.size) - np.repeat(np.cumsum(count) - count, count))
    graph = coo_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(first.size, first.size))
    n, comp = connected_components(graph, directed=False)
    # Number the components in the raster order of their first run (= their first pixel).
    _, first_run = np.unique(comp, return_index=True)
    order = np.empty(n, np.int32)
    order[np.argsort(first_run, kind="stable")] = np.arange(1, n + 1, dtype=np.int32)
    return int(n), np.repeat(order[comp], last - first + 1)


def lesion_counts(label: NDArray, values: list[int] | tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """``{value: (lesions, pixels)}`` of a label map for each of ``values``: one pass over the
    map, then only its lesion pixels (a 4288x2848 map's counts cost a few ms, not a label image
    per type: the Segment dock counts at every step of its threshold slider)."""
    flat = np.ascontiguousarray(label).ravel()
    nz = np.flatnonzero(flat != 0)  # on a bool array: 4x faster than on the uint8 map itself
    at = flat[nz]
    w = np.shape(label)[1]
    out = {}
    for v in values:
        idx = nz[at == v]
        out[v] = (run_components(idx, w)[0], int(idx.size))
    return out


def labelled_mask(prob: NDArray[np.float32], threshold: float, min_area: int
                  ) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """``threshold_mask`` and its 8-connected lesion labels from one labelling pass: the same
    mask, and the same ids (raster order of each lesion's first pixel) as labelling it again."""
    return _labelled(prob > threshold, min_area)


def _labelled(m: NDArray[np.bool_], min_area: int) -> tuple[NDArray[np.uint8], NDArray[np.int32]]:
    """Label ``m``, drop components under ``min_area`` px and renumber the rest in order."""
    lab, n, idx, ids = label_runs(m)
    if min_area > 1 and n:
        keep = np.bincount(ids, minlength=n + 1) >= min_area
        keep[0] = False
        if not keep[1:].all():
            lab.ravel()[idx] = (np.cumsum(keep) * keep).astype(np.int32)[ids]
    return (lab > 0).view(np.uint8), lab


@dataclass(frozen=True)
class ComponentStats:
    """Per-component sums for components ``1..n`` of a label image (index 0 unused)."""

    area: NDArray[np.float64]
    prob_sum: NDArray[np.float64]
    prob_max: NDArray[np.float64]
    weight_sum: NDArray[np.float64]
    cy: NDArray[np.float64]
    cx: NDArray[np.float64]
    boxes: list


def component_stats(comp: NDArray[np.int32], n: int | None, prob: NDArray, weight: NDArray | None = None,
                    with_max: bool = False) -> ComponentStats:
    """Area, probability sum (and max), ``weight`` sum, centroid sums and bounding boxes of the
    components ``1..n`` of ``comp`` (``n=None``: the largest id present), computed over
    component pixels only (a tiny fraction of a photo)."""
    flat = comp.ravel()
    idx = np.flatnonzero(flat != 0)  # nonzero() on a bool array is 10x faster than on int32
    ids = flat[idx]
    if n is None:
        n = int(ids.max(initial=0))
    p = prob.ravel()[idx].astype(np.float64)
    count = lambda w=None: np.bincount(ids, weights=w, minlength=n + 1).astype(np.float64)  # noqa: E731
    pmax = np.zeros(n + 1)
    if with_max:
        np.maximum.at(pmax, ids, p)
    yy, xx = np.divmod(idx, comp.shape[1])
    lo_y, lo_x = np.full(n + 1, comp.shape[0]), np.full(n + 1, comp.shape[1])
    hi_y, hi_x = np.full(n + 1, -1), np.full(n + 1, -1)
    np.minimum.at(lo_y, ids, yy)
    np.minimum.at(lo_x, ids, xx)
    np.maximum.at(hi_y, ids, yy)
    np.maximum.at(hi_x, ids, xx)
    boxes = [None if hi_y[i] < 0 else (slice(int(lo_y[i]), int(hi_y[i]) + 1), slice(int(lo_x[i]), int(hi_x[i]) + 1))
             for i in range(1, n + 1)]  # as scipy.ndimage.find_objects gives them
    return ComponentStats(
        area=count(), prob_sum=count(p), prob_max=pmax,
        weight_sum=count(np.asarray(weight).ravel()[idx].astype(np.float64)) if weight is not None else np.zeros(n + 1),
        cy=count(yy.astype(np.float64)), cx=count(xx.astype(np.float64)), boxes=boxes,
    )


def lesion_table(mask: NDArray, prob: NDArray[np.float32], fuzzy: NDArray[np.float32] | None = None,
                 mm_per_px: float | None = None, labels: NDArray[np.int32] | None = None, kind: str = "HE"
                 ) -> tuple[list[Lesion], NDArray[np.int32]]:
    """Label the mask's 8-connected components (or take ``labels`` from ``labelled_mask``)
    and describe each.

    Returns ``(lesions, labels)``: ``labels`` is ``int32 (H, W)`` with 0 = background and
    lesion ``i`` painted ``i`` (ids from 1, in raster order).
    """
    lab = labels if labels is not None else label_runs(np.asarray(mask) == 1)[0]
    fz = None if fuzzy is None else (fuzzy > FUZZY_CUTOFF)
    st = component_stats(lab, None, prob, fz, with_max=True)  # the count from the lesion pixels
    n = len(st.boxes)
    if n == 0:
        return [], lab
    area, boxes = st.area, st.boxes
    out = []
    for i in range(1, n + 1):
        sl = boxes[i - 1]
        a = int(area[i])
        out.append(Lesion(
            id=i, area_px=a, area_mm2=None if mm_per_px is None else a * mm_per_px**2,
            centroid_y=float(st.cy[i] / a), centroid_x=float(st.cx[i] / a),
            y0=sl[0].start, x0=sl[1].start, y1=sl[0].stop, x1=sl[1].stop,
            mean_prob=float(st.prob_sum[i] / a), max_prob=float(st.prob_max[i]),
            fuzzy_fraction=float(st.weight_sum[i] / a), type=kind,
        ))
    return out, lab
