"""Where the optic disc and the fovea are, and where a lesion lies relative to them.

The optic disc comes from a model's ``OD`` output: the roundest connected region above its
threshold of a plausible disc's size (:func:`disc_region`; the optic-disc mask shows that region
only), its centre the region's centroid and its diameter (the unit "disc diameter", DD)
that of a circle of the same area. The fovea is *found* as the darkest spot of the smoothed
green channel between 1.8 and 3.2 DD from the disc centre, on the temporal side (away from
the disc's side of the photo; for a disc within 0.5 DD of the photo's centre, as in a
disc-centred photo, whichever side holds the clearer such spot), within 1 DD of the disc's
height, when that spot is clearly darker than its surroundings and not on the search region's
edge; otherwise it is
*estimated* 2.5 DD temporal to the disc centre and 0.3 DD below it (the disc-fovea axis falls
about 7 degrees; on 499 unlabelled IDRiD photos the found foveas lay a median 0.31 DD below the
disc centre: ``benchmarks/anatomy_many.py``). Zones, by distance to
the fovea: ``macula`` (at most 1 DD), ``posterior pole`` (at most 3 DD), ``periphery``.

Everything is computed on the model's working grid (a few milliseconds) and reported in
input pixels. Without a disc (an HE-only model, or no plausible disc region) every distance
and zone is empty and ``note`` says why.

Every model, with a disc or without, also places a lesion in the photo's round field of view:
``field_r``, the distance of its centroid from the field's centre as a share of the field's
radius (0 at the centre, 1 at the rim), from the circle the preprocessing fits round the fundus;
empty for a photo with no round field (cropped inside the retina), where the circle is the
crop's and says nothing of the fundus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

if TYPE_CHECKING:  # annotations only: the lesion table and the project store stay free of torch
    from .preprocess import Geometry

MACULA_DD = 1.0
POSTERIOR_POLE_DD = 3.0
FOVEA_DD = 2.5  # the fovea's usual distance from the disc centre, in disc diameters
FOVEA_BELOW_DD = 0.3  # and how far below the disc centre it lies (image y down)
SEARCH_DD = (1.8, 3.2)
SEARCH_HEIGHT_DD = 1.0
MIN_CONTRAST = 0.25  # the found spot must be this many (robust) SDs darker than its search region
DISC_DIAMETER_RANGE = (0.06, 0.35)  # plausible disc diameter as a fraction of the fundus disc's
JOIN_FRACTION = 0.015  # fragments of one disc closer than this share of the fundus diameter are joined
CENTRED_DISC_FOUND = "the disc lies near the photo's centre: the macula's side is the one with the clearer dark spot"
CENTRED_DISC_GUESS = "the disc lies near the photo's centre and no macula was found: the temporal side is a guess"
# a photo with no round field of view (cropped inside the retina): where the disc lies in it says
# nothing of the side the macula is on (a crop of IDRiD 04 with its disc right of the centre got
# its fovea estimated 2.5 disc diameters to the left, on the nasal side)
CROP_FOUND = "no round field of view (a crop?): the macula's side is the one with the clearer dark spot"
CROP_GUESS = "no round field of view (a crop?) and no macula found: the temporal side is a guess"


@dataclass(frozen=True)
class Anatomy:
    """Optic disc and fovea in input pixels (``(y, x)``); None where not known."""

    disc_centre: tuple[float, float] | None = None
    disc_diameter: float | None = None  # px: the unit of ``od_distance_dd``
    fovea: tuple[float, float] | None = None
    fovea_method: str = ""  # "found in the photo", "estimated from the disc" or ""
    note: str = ""  # why something is missing, or what is uncertain
    field: tuple[float, float, float] | None = None  # the round field of view: centre y, x and radius (px)
    disc_source: str = ""  # where the disc came from when not the model's own output (core/disc_locator.py)

    def with_field(self, geom: Geometry) -> Anatomy:
        """This anatomy with the round field of view of ``geom`` (none for a photo without one)."""
        fov = geom.fov
        crop = fov.covers_whole(geom.input_shape)
        return replace(self, field=None if crop or fov.radius <= 0 else (fov.cy, fov.cx, fov.radius))

    def field_r(self, y: float, x: float) -> float | None:
        """Distance of input pixel ``(y, x)`` from the field of view's centre, as a share of its radius."""
        if self.field is None:
            return None
        cy, cx, radius = self.field
        return math.hypot(y - cy, x - cx) / radius

    def od_distance_dd(self, y: float, x: float) -> float | None:
        """Distance of input pixel ``(y, x)`` from the disc centre, in disc diameters."""
        if self.disc_centre is None or not self.disc_diameter:
            return None
        return math.hypot(y - self.disc_centre[0], x - self.disc_centre[1]) / self.disc_diameter

    def fovea_distance_dd(self, y: float, x: float) -> float | None:
        if self.fovea is None or not self.disc_diameter:
            return None
        return math.hypot(y - self.fovea[0], x - self.fovea[1]) / self.disc_diameter

    def to_dict(self) -> dict:
        return {"disc_centre": list(self.disc_centre) if self.disc_centre else None,
                "disc_diameter": self.disc_diameter, "fovea": list(self.fovea) if self.fovea else None,
                "fovea_method": self.fovea_method, "note": self.note,
                "field": list(self.field) if self.field else None, "disc_source": self.disc_source}

    @classmethod
    def from_dict(cls, raw: object) -> Anatomy:
        """The inverse of :meth:`to_dict`; anything malformed gives an empty Anatomy."""
        if not isinstance(raw, dict):
            return cls()
        try:
            pt = lambda v: (float(v[0]), float(v[1])) if isinstance(v, list) and len(v) == 2 else None  # noqa: E731
            d = raw.get("disc_diameter")
            f = raw.get("field")  # absent in projects saved before 2026-12-07
            field = (float(f[0]), float(f[1]), float(f[2])) if isinstance(f, list) and len(f) == 3 and f[2] > 0 \
                else None
            return cls(pt(raw.get("disc_centre")), float(d) if isinstance(d, (int, float)) and d > 0 else None,
                       pt(raw.get("fovea")), str(raw.get("fovea_method", "")), str(raw.get("note", "")), field,
                       str(raw.get("disc_source", "")))
        except (TypeError, ValueError):
            return cls()

    def notes(self) -> list[str]:
        """The note, as a photo's notes list it: none when it only says that the model has no
        disc output (``predict(..., locate_disc=False)``: nothing was looked for)."""
        return [self.note] if self.note and self.note != NO_OD_OUTPUT else []

    def zone(self, y: float, x: float) -> str | None:
        """``macula``, ``posterior pole`` or ``periphery`` (see the module's docstring)."""
        d = self.fovea_distance_dd(y, x)
        if d is None:
            return None
        return "macula" if d <= MACULA_DD else "posterior pole" if d <= POSTERIOR_POLE_DD else "periphery"


def _fundus_diameter(geom: Geometry) -> float:
    """The fundus disc's diameter on the working grid."""
    return 2.0 * geom.fov.radius * geom.scale[1]


def disc_region(od_prob: NDArray[np.float32], od_threshold: float, disc: NDArray[np.bool_],
                geom: Geometry) -> NDArray[np.bool_] | None:
    """The optic disc on the working grid: of the regions of ``od_prob`` above its threshold
    inside the fundus ``disc`` (fragments split by crossing vessels joined), the roundest of
    those of a plausible disc's size (:func:`roundness`; ties: the higher probability); when
    none has a plausible size, the one holding the highest probability (:func:`locate_region`
    then says it is no plausible disc). None when no pixel is above the threshold. The disc is
    one region: the optic-disc mask keeps only this one.

    Why the roundest: the model also lights up bright exudate clusters and the field's rim, and
    such a region can hold a probability as saturated as the disc's (0.98-0.999 on both). On 499
    unlabelled IDRiD photos the highest probability picked one of those over the disc on 5
    photos (an exudate ring or patch, a rim crescent; roundness 0.44-0.90 against 0.91-0.94 for
    those photos' discs) and roundness picked the disc on all 5, with no other choice changed but
    between two halves of one split disc (``benchmarks/anatomy_many.py``; the rule was chosen on
    those photos; fold 4's out-of-fold optic-disc Dice is unchanged by it). Not the largest either: a
    bright lesion cluster can be larger (IDRiD_10's 2.9 DD from the disc)."""
    fundus_d = _fundus_diameter(geom)
    on = (od_prob > od_threshold) & disc
    # the vessels crossing a disc can split its mask: fragments closer than about a tenth of a
    # disc diameter (0.015 of the fundus's) are one region
    gap = max(1, int(round(JOIN_FRACTION * fundus_d)))
    lab, n = ndimage.label(ndimage.binary_closing(on, np.ones((3, 3), bool), iterations=gap) & disc)
    if n == 0:
        return None
    lo, hi = DISC_DIAMETER_RANGE
    best, best_key = 0, (-1.0, -1.0)
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None:
            continue
        region = lab[box] == i
        diameter = 2.0 * math.sqrt(float(region.sum()) / math.pi)
        top = float(od_prob[box][region].max())
        # plausible regions rank by roundness, then probability; the rest only by probability,
        # after every plausible one
        key = (roundness(region), top) if lo * fundus_d <= diameter <= hi * fundus_d else (-1.0, top)
        if key > best_key:
            best, best_key = i, key
    return lab == best


def roundness(region: NDArray[np.bool_]) -> float:
    """The share of ``region``'s pixels inside the circle of the same area around its centroid:
    about 0.95 for a filled disc, less for a ring, a crescent or a ragged cluster."""
    ys, xs = np.nonzero(region)
    r2 = len(ys) / math.pi
    return float((((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2) <= r2).mean())


NO_OD_OUTPUT = "the model has no optic-disc output: no disc-relative distances or zones"


def locate(od_prob: NDArray[np.float32] | None, od_threshold: float, green: NDArray[np.float32],
           disc: NDArray[np.bool_], geom: Geometry) -> Anatomy:
    """The disc from ``od_prob`` (working grid; None: the model has no OD output) and the
    fovea from ``green`` (the working image's green channel), inside the fundus ``disc``."""
    if od_prob is None:
        return Anatomy(note=NO_OD_OUTPUT)
    return locate_region(disc_region(od_prob, od_threshold, disc, geom), green, disc, geom)


def locate_region(region: NDArray[np.bool_] | None, green: NDArray[np.float32], disc: NDArray[np.bool_],
                  geom: Geometry) -> Anatomy:
    """:func:`locate` from the disc's :func:`disc_region` (None: none found)."""
    if region is None:
        return Anatomy(note="no optic disc found in this photo: no disc-relative distances or zones")
    fundus_d = _fundus_diameter(geom)
    cy, cx = ndimage.center_of_mass(region)
    dd_work = 2.0 * math.sqrt(float(region.sum()) / math.pi)
    lo, hi = DISC_DIAMETER_RANGE
    if not lo * fundus_d <= dd_work <= hi * fundus_d:
        return Anatomy(note=f"the optic-disc region found ({dd_work / fundus_d:.0%} of the fundus diameter) "
                            "is not a plausible disc: no disc-relative distances or zones")
    centre = geom.to_input(cy, cx)
    dd = dd_work / geom.scale[1]
    fy, fx, method, note = _fovea(green, disc, cy, cx, dd_work, geom)
    return Anatomy(centre, dd, geom.to_input(fy, fx), method, note)


def _fovea(green: NDArray[np.float32], disc: NDArray[np.bool_], cy: float, cx: float, dd: float,
           geom: Geometry) -> tuple[float, float, str, str]:
    """``(y, x)`` of the fovea on the working grid, how it was placed, and a note. The fovea is
    temporal to the disc: away from the disc's side of the photo. A disc within 0.5 DD of the
    photo's centre (a disc-centred photo) does not say which side that is, nor does the disc's
    place in a photo cropped inside the retina: then both sides are searched and the clearer
    dark spot wins; only if neither has one is the side a guess."""
    fundus_cx = (geom.fov.cx - geom.box[2] + 0.5) * geom.scale[1] - 0.5
    away = 1.0 if fundus_cx >= cx else -1.0
    crop = geom.fov.covers_whole(geom.input_shape)  # the detector found no round field of view
    sides = (away, -away) if crop or abs(fundus_cx - cx) < 0.5 * dd else (away,)
    found_note, guess_note = (CROP_FOUND, CROP_GUESS) if crop else (CENTRED_DISC_FOUND, CENTRED_DISC_GUESS)
    # a blob detector at the fovea's scale: the green channel smoothed over 0.3 DD minus its
    # background over 1.5 DD (both normalised by the fundus disc, so the dark surround of the
    # photo and the vignetting towards the rim do not pull the minimum outwards)
    smooth = _masked_blur(green, disc, 0.3 * dd) - _masked_blur(green, disc, 1.5 * dd)
    found = [f for f in (_dark_spot(smooth, disc, cy, cx, dd, side) for side in sides) if f is not None]
    if found:
        fy, fx, _ = max(found, key=lambda f: f[2])
        note = "" if len(sides) == 1 else found_note
        return fy, fx, "found in the photo", note
    note = "" if len(sides) == 1 else guess_note
    return cy + FOVEA_BELOW_DD * dd, cx + away * FOVEA_DD * dd, "estimated from the disc", note


def _dark_spot(smooth: NDArray[np.float32], disc: NDArray[np.bool_], cy: float, cx: float, dd: float,
               side: float) -> tuple[float, float, float] | None:
    """The fovea's candidate on one ``side`` of the disc (+1: right): ``(y, x, contrast)`` of the
    darkest spot of ``smooth`` (the blob detector's response) between 1.8 and 3.2 DD from the
    disc centre, within 1 DD of its height, when it is clearly darker (``contrast``: robust SDs
    below the region's median) and not on the region's edge; None otherwise."""
    h, w = smooth.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(yy - cy, xx - cx)
    region = ((dist >= SEARCH_DD[0] * dd) & (dist <= SEARCH_DD[1] * dd) & (np.abs(yy - cy) <= SEARCH_HEIGHT_DD * dd)
              & ((xx - cx) * side > 0) & ndimage.binary_erosion(disc, iterations=max(1, int(0.2 * dd))))
    if region.sum() < 20:
        return None
    vals = smooth[region]
    i = int(np.argmin(vals))
    ys, xs = np.nonzero(region)
    fy, fx = float(ys[i]), float(xs[i])
    med = float(np.median(vals))
    spread = float(np.median(np.abs(vals - med))) * 1.4826 + 1e-6
    contrast = (med - vals[i]) / spread
    inner = ndimage.binary_erosion(region, iterations=max(1, int(0.1 * dd)))
    if contrast >= MIN_CONTRAST * 4 and inner[int(fy), int(fx)]:
        return fy, fx, float(contrast)
    return None


def _masked_blur(img: NDArray[np.float32], mask: NDArray[np.bool_], sigma: float) -> NDArray[np.float32]:
    """Gaussian blur of ``img`` over ``mask`` only (normalised convolution). A wide blur is
    computed on a grid ``f`` times coarser (block sums, ``sigma / f`` at least 4 coarse pixels)
    and brought back by bilinear interpolation: the fovea's scales are tens of working pixels,
    where the full-grid blur cost 1.4 s a photo (most of a five-output model's extra time)."""
    sigma = max(1.0, sigma)
    f = max(1, int(sigma // 4))
    m = mask.astype(np.float32)
    v = np.where(mask, img, 0).astype(np.float32)
    if f == 1:
        return ndimage.gaussian_filter(v, sigma) / np.maximum(ndimage.gaussian_filter(m, sigma), 1e-3)
    h, w = img.shape
    hc, wc = -(-h // f), -(-w // f)

    def block_sum(a: NDArray[np.float32]) -> NDArray[np.float32]:
        padded = np.zeros((hc * f, wc * f), np.float32)
        padded[:h, :w] = a
        return padded.reshape(hc, f, wc, f).sum(axis=(1, 3))

    num = ndimage.gaussian_filter(block_sum(v), sigma / f)
    den = ndimage.gaussian_filter(block_sum(m), sigma / f)
    coarse = num / np.maximum(den, 1e-3 * f * f)
    yy = (np.arange(h, dtype=np.float32) + 0.5) / f - 0.5
    xx = (np.arange(w, dtype=np.float32) + 0.5) / f - 0.5
    rows = np.stack([np.interp(xx, np.arange(wc), r) for r in coarse])  # (hc, w)
    return np.stack([np.interp(yy, np.arange(hc), c) for c in rows.T], axis=1).astype(np.float32)
