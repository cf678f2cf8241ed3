"""Regions to review, most uncertain first: the lesions of a mask and the fuzzy regions the
mask does not cover (where the model is unsure whether there is a lesion)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .lesions import FUZZY_CUTOFF, component_stats, label_runs

MIN_FIRST_AREA = 20  # px; smaller regions are listed after all larger ones


@dataclass(frozen=True)
class Region:
    """``kind`` is ``lesion`` or ``fuzzy``; ``label`` its id in ``components`` of its kind;
    ``fuzziness`` the mean fuzzy membership over the region (the sort key)."""

    kind: str
    label: int
    area_px: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (half-open)
    mean_prob: float
    fuzziness: float


@dataclass
class ReviewSet:
    regions: list[Region]
    lesion_components: NDArray[np.int32]
    fuzzy_components: NDArray[np.int32]

    def pixels(self, region: Region) -> NDArray[np.bool_]:
        comp = self.lesion_components if region.kind == "lesion" else self.fuzzy_components
        return comp == region.label


def _regions(kind: str, comp: NDArray[np.int32], n: int, prob: NDArray, fuzzy: NDArray,
             min_area: int) -> list[Region]:
    if n == 0:
        return []
    st = component_stats(comp, n, prob, fuzzy)
    out = []
    for i in range(1, n + 1):
        a = int(st.area[i])
        sl = st.boxes[i - 1]
        if a < min_area or sl is None:
            continue
        out.append(Region(kind, i, a, (float(st.cy[i] / a), float(st.cx[i] / a)),
                          (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop),
                          float(st.prob_sum[i] / a), float(st.weight_sum[i] / a)))
    return out


def review_regions(mask: NDArray, prob: NDArray[np.float32], fuzzy: NDArray[np.float32],
                   min_fuzzy_area: int = 20) -> ReviewSet:
    """Lesions (``mask == 1`` components) and uncovered fuzzy regions, most uncertain first."""
    lesion = np.asarray(mask) == 1
    les_comp, n_les = label_runs(lesion)[:2]  # 8-connected, as the lesion table labels
    fz_comp, n_fz = label_runs((fuzzy > FUZZY_CUTOFF) & ~lesion)[:2]
    regions = (_regions("lesion", les_comp, n_les, prob, fuzzy, 1)
               + _regions("fuzzy", fz_comp, n_fz, prob, fuzzy, min_fuzzy_area))
    # specks (a few pixels) go last: the list must not open on a 4-px dot
    regions.sort(key=lambda r: (r.area_px < MIN_FIRST_AREA, -r.fuzziness, -r.area_px))
    return ReviewSet(regions, les_comp, fz_comp)
