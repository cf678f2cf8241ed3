"""Regions to review, likeliest mistakes first: the lesions of a mask (each possibly a false
alarm) and the candidate misses outside it (each possibly a lesion the mask missed).

Candidate misses are the connected regions where the probability exceeds a floor well below
the threshold (``inference.review.floor``; 5 % of the threshold by default) and that hold no
mask pixel (the rim of a found lesion is not a miss; :func:`candidate_misses`):
a lesion the mask misses usually still lifts the probability a little, which the fuzzy map's
largest values (the uncertain edges of lesions already found) do not show. Each region's
score is the estimated chance that it is a mistake, read from the model's
``inference.review`` rates at the region's highest probability (counted on its training
photos by ``training/fit_review.py``); models without the rates order regions by their mean
fuzzy value. Without a threshold (layers of unknown origin) the candidates are the regions
where the fuzzy map exceeds ``FUZZY_CUTOFF``. Specks come last either way (in this order).

The list can also run from the rim of the photo's round field of view inwards (``order =
"rim"``, each region's ``field_r`` from the photo's ``Anatomy``): a tessellated fundus's false
alarms crowd its periphery, and listed together they are selected and deleted at once. Or from
the fovea outwards (``order = "macula"``, each region's ``fovea_dd``, its distance from the
fovea in disc diameters): a lesion in the macula weighs most in grading, so those are checked
first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from .anatomy import Anatomy
from .lesions import FUZZY_CUTOFF, component_stats, label_runs
from .model_config import ReviewConfig

MIN_FIRST_AREA = 20  # px; smaller regions are listed after all larger ones
#: the Review dock lists regions whose chance of being a mistake is at least this (one in
#: twenty; a setting of the dock, 0 lists every region); those under it are counted, not listed
HIDE_BELOW = 0.05


@dataclass(frozen=True)
class Region:
    """``kind`` is ``lesion`` or ``fuzzy`` (a candidate miss); ``label`` its id in
    ``components`` of its kind; ``fuzziness`` the mean fuzzy value over the region; ``score``
    the sort key (the estimated chance that the region is a mistake, or ``fuzziness``)."""

    kind: str
    label: int
    area_px: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (half-open)
    mean_prob: float
    fuzziness: float
    max_prob: float = 0.0
    score: float = 0.0
    decided: bool = False  # the annotator changed pixels of it (painted, accepted, deleted): not a mistake to find
    field_r: float | None = None  # the centroid's place in the round field of view (0 centre, 1 rim; None: unknown)
    fovea_dd: float | None = None  # the centroid's distance from the fovea in disc diameters (None: unknown)


@dataclass
class ReviewSet:
    regions: list[Region]
    lesion_components: NDArray[np.int32]
    fuzzy_components: NDArray[np.int32]
    rated: bool = False  # scores are the model's mistake rates (else fuzziness, no chance)
    hidden: list[Region] = field(default_factory=list)  # set aside by :meth:`cut`, in list order
    order: str = "mistakes"  # the list's order: a key of ORDERS

    @property
    def placed(self) -> bool:
        """Whether the regions have their place in the field of view (the rim order means something)."""
        return any(r.field_r is not None for r in self.regions + self.hidden)

    @property
    def near_fovea(self) -> bool:
        """Whether the regions have their distance from the fovea (the macula order means something)."""
        return any(r.fovea_dd is not None for r in self.regions + self.hidden)

    def orders(self) -> list[str]:
        """The orders that mean something for these regions (ORDERS' keys, in its order)."""
        return [o for o in ORDERS if o == "mistakes" or (o == "rim" and self.placed)
                or (o == "macula" and self.near_fovea)]

    def expected_mistakes(self, first: int | None = None) -> float | None:
        """How many of the (``first``) regions are expected to be mistakes: the sum of their
        chances, when the scores are chances (None otherwise). Rates counted on the model's
        training photos: an estimate for a new photo, to tell a reviewer how far down the list
        the mistakes lie, not a promise."""
        if not self.rated:
            return None
        return float(sum(r.score for r in self.regions[:first]))

    def expected_hidden(self) -> float | None:
        """How many of the regions set aside by :meth:`cut` are expected to be mistakes."""
        return float(sum(r.score for r in self.hidden)) if self.rated else None

    def cut(self, below: float) -> ReviewSet:
        """The same set with the regions whose chance of being a mistake is under ``below`` moved
        from ``regions`` to ``hidden`` (both in list order); ``below = 0`` lists every region
        again. Without rates (scores that are no chances) nothing is set aside."""
        everything = sorted(self.regions + self.hidden, key=ORDERS[self.order])
        if not self.rated or below <= 0:
            return replace(self, regions=everything, hidden=[])
        return replace(self, regions=[r for r in everything if r.score >= below],
                       hidden=[r for r in everything if r.score < below])

    def pixels(self, region: Region) -> NDArray[np.bool_]:
        comp = self.lesion_components if region.kind == "lesion" else self.fuzzy_components
        return comp == region.label

    def lesion_pixels(self, region: Region, prob: NDArray) -> NDArray[np.bool_]:
        """What accepting the region makes lesion: a lesion's pixels; of a candidate miss, the
        pixels at half its highest probability or more (its core, not the faint halo that
        makes the region)."""
        pix = self.pixels(region)
        if region.kind == "fuzzy" and region.max_prob > 0:
            pix &= np.asarray(prob) >= 0.5 * region.max_prob
        return pix


def _regions(kind: str, comp: NDArray[np.int32], n: int, prob: NDArray, fuzzy: NDArray, min_area: int,
             rate: list[list[float]] | None) -> list[Region]:
    if n == 0:
        return []
    st = component_stats(comp, n, prob, fuzzy, with_max=True)
    out = []
    for i in range(1, n + 1):
        a = int(st.area[i])
        sl = st.boxes[i - 1]
        if a < min_area or sl is None:
            continue
        fz = float(st.weight_sum[i] / a)
        pmax = float(st.prob_max[i])
        score = float(np.interp(pmax, rate[0], rate[1])) if rate is not None else fz
        out.append(Region(kind, i, a, (float(st.cy[i] / a), float(st.cx[i] / a)),
                          (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop),
                          float(st.prob_sum[i] / a), fz, pmax, score))
    return out


def review_regions(mask: NDArray, prob: NDArray[np.float32], fuzzy: NDArray[np.float32],
                   min_fuzzy_area: int = 20, *, threshold: float | None = None,
                   review: ReviewConfig | None = None, decided: NDArray[np.bool_] | None = None,
                   anatomy: Anatomy | None = None) -> ReviewSet:
    """Lesions (``mask == 1`` components) and candidate misses, likeliest mistakes first
    (module text). ``threshold``: the model's; ``review``: its ``inference.review``.
    ``decided``: the pixels where ``mask`` differs from the model's own mask (the annotator's
    edits); a region holding any is the annotator's decision, not a mistake to look for:
    score 0, listed last (an accepted miss came back at the top as a likely false alarm, a
    deleted false alarm as a likely miss). ``anatomy``: the photo's, for each region's place
    in the round field of view (``field_r``) and its distance from the fovea (``fovea_dd``)."""
    review = review or ReviewConfig()
    lesion = np.asarray(mask) == 1
    les_comp, n_les = label_runs(lesion)[:2]  # 8-connected, as the lesion table labels
    if threshold is not None:
        candidates = candidate_misses(prob, lesion, review.floor_for(threshold))
    else:
        candidates = (np.asarray(fuzzy) > FUZZY_CUTOFF) & ~lesion
    fz_comp, n_fz = label_runs(candidates)[:2]
    rated = threshold is not None and review.missed_rate is not None and review.false_alarm_rate is not None
    regions = (_regions("lesion", les_comp, n_les, prob, fuzzy, 1, review.false_alarm_rate if rated else None)
               + _regions("fuzzy", fz_comp, n_fz, prob, fuzzy, min_fuzzy_area, review.missed_rate if rated else None))
    if decided is not None and np.shape(decided) == lesion.shape and np.any(decided):
        d = np.asarray(decided, bool)
        touched = {"lesion": np.bincount(les_comp[d], minlength=n_les + 1) > 0,
                   "fuzzy": np.bincount(fz_comp[d], minlength=n_fz + 1) > 0}
        regions = [replace(r, score=0.0, decided=True) if touched[r.kind][r.label] else r for r in regions]
    if anatomy is not None and anatomy.field is not None:
        regions = [replace(r, field_r=round(anatomy.field_r(*r.centroid), 3)) for r in regions]
    if anatomy is not None and anatomy.fovea is not None and anatomy.disc_diameter:
        regions = [replace(r, fovea_dd=round(anatomy.fovea_distance_dd(*r.centroid), 3)) for r in regions]
    regions.sort(key=_order)
    return ReviewSet(regions, les_comp, fz_comp, rated)


def _order(r: Region) -> tuple[bool, bool, float, int]:
    """The list's order: likeliest mistakes first, larger first among equals; specks (a few
    pixels) last whatever their score: the list must not open on a 4-px dot; the annotator's
    own decisions after everything."""
    return (r.decided, r.area_px < MIN_FIRST_AREA, -r.score, -r.area_px)


def _rim_order(r: Region) -> tuple[bool, bool, float, float, int]:
    """From the rim of the field inwards (regions without a place after those with one), the
    likelier mistake first among equals; the annotator's own decisions after everything. Specks
    keep their place here: at the rim they are what a tessellated fundus raises."""
    return (r.decided, r.field_r is None, -(r.field_r or 0.0), -r.score, -r.area_px)


def _macula_order(r: Region) -> tuple[bool, bool, float, float, int]:
    """From the fovea outwards (regions without a distance after those with one), the likelier
    mistake first among equals; the annotator's own decisions after everything. Specks keep
    their place: near the fovea a microaneurysm-sized spot is what matters."""
    return (r.decided, r.fovea_dd is None, r.fovea_dd or 0.0, -r.score, -r.area_px)


#: the orders a review list can take: likeliest mistakes first, from the field's rim inwards, or
#: from the fovea outwards
ORDERS = {"mistakes": _order, "rim": _rim_order, "macula": _macula_order}


def candidate_misses(prob: NDArray, lesion: NDArray[np.bool_], floor: float) -> NDArray[np.bool_]:
    """Pixels of the regions where the probability exceeds ``floor`` that hold no pixel of
    ``lesion``: blobs of their own, not the rim of a lesion the mask found (a rim's highest
    probability is always just below the threshold; it is reviewed with its lesion)."""
    comp, n, idx, ids = label_runs(np.asarray(prob) > floor)
    if n == 0:
        return np.zeros(comp.shape, bool)
    touches = np.zeros(n + 1, bool)
    touches[ids[np.asarray(lesion).ravel()[idx]]] = True
    keep = ~touches[ids]
    out = np.zeros(comp.size, bool)
    out[idx[keep]] = True
    return out.reshape(comp.shape)


def settings_metadata(threshold: float, review: ReviewConfig) -> dict:
    """What the queue needs of a model, as plain data: kept with a prediction's layers and its
    stored copy in a project; read back by :func:`review_settings`."""
    return {"threshold": threshold, "review": asdict(review)}


def review_settings(metadata: dict) -> tuple[float | None, ReviewConfig | None]:
    """``(threshold, review config)`` from a prediction layer's metadata (None where absent or
    unreadable: older layers and projects)."""
    from .dataclass_io import ConfigError, from_dict

    thr = metadata.get("threshold")
    raw = metadata.get("review")
    try:
        review = from_dict(ReviewConfig, raw, "review") if isinstance(raw, dict) else None
    except (ConfigError, TypeError, ValueError):
        review = None
    return (float(thr) if isinstance(thr, (int, float)) else None), review
