"""Field of view: the round, lit disc of a fundus photograph.

The disc is found on a downsampled copy (bright pixels, largest component, holes filled),
then a circle is fitted algebraically (Kasa fit) to the disc's boundary points that do not lie
on the image border, so discs cut off at the top and bottom (as in IDRiD) are measured right.
A circle whose outside is lit retina (a photo cropped inside the retina, where the bright region
is only part of it) is no field of view: the whole image is taken instead. A camera's text or
info panel in the dark surround is lit but no retina, and leaves the circle as it is. A frame of
one lit colour round the photo (a scan's white border) is left out before the disc is looked
for, and stays out of the field of view (``FieldOfView.within``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_WORK_SIDE = 512  # longest side of the copy the disc is found on


@dataclass(frozen=True)
class FieldOfView:
    """A circle in input-pixel coordinates (x to the right, y down, pixel centres at integers);
    ``within`` ``(y0, y1, x0, x1)``: the part of the image the photo fills, when a frame round it
    is left out (a fundus cut at the top and bottom reaches into the frame), else None."""

    cx: float
    cy: float
    radius: float
    within: tuple[int, int, int, int] | None = None

    def box(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: the circle's bounding box clipped to an image of ``shape`` (and
        to ``within``)."""
        h, w = shape[:2]
        fy0, fy1, fx0, fx1 = self.within or (0, h, 0, w)
        y0 = max(0, fy0, int(math.floor(self.cy - self.radius)))
        y1 = min(h, fy1, int(math.ceil(self.cy + self.radius)) + 1)
        x0 = max(0, fx0, int(math.floor(self.cx - self.radius)))
        x1 = min(w, fx1, int(math.ceil(self.cx + self.radius)) + 1)
        if y1 <= y0 or x1 <= x0:
            return 0, h, 0, w
        return y0, y1, x0, x1

    def mask(self, shape: tuple[int, int], scale: float = 1.0,
             offset: tuple[float, float] = (0.0, 0.0)) -> NDArray[np.bool_]:
        """Boolean disc of ``shape``; ``scale``/``offset`` map that grid to input pixels.

        Pixel ``(i, j)`` of the grid lies at input coordinates
        ``(offset_y + (i + 0.5) / scale - 0.5, offset_x + (j + 0.5) / scale - 0.5)``.
        """
        h, w = shape[:2]
        oy, ox = offset
        ys = oy + (np.arange(h, dtype=np.float64) + 0.5) / scale - 0.5
        xs = ox + (np.arange(w, dtype=np.float64) + 0.5) / scale - 0.5
        dy2 = (ys - self.cy) ** 2
        dx2 = (xs - self.cx) ** 2
        out = np.empty((h, w), bool)
        for r in range(0, h, 256):  # in row blocks: no full-size float64 temporary (96 MB for IDRiD)
            np.less_equal(dy2[r:r + 256, None] + dx2[None, :], self.radius**2, out=out[r:r + 256])
        if self.within is not None:
            out &= self.within_mask(ys, xs)
        return out

    def within_mask(self, ys: NDArray, xs: NDArray) -> NDArray[np.bool_]:
        """Which of the grid points ``(ys, xs)`` (input coordinates of rows and columns) lie in
        ``within`` (all when it is None)."""
        if self.within is None:
            return np.ones((len(ys), len(xs)), bool)
        y0, y1, x0, x1 = self.within
        return (((ys >= y0 - 0.5) & (ys < y1 - 0.5))[:, None]) & (((xs >= x0 - 0.5) & (xs < x1 - 0.5))[None, :])

    @property
    def diameter(self) -> float:
        return 2.0 * self.radius

    def covers_whole(self, shape: tuple[int, int]) -> bool:
        """Whether the circle covers the whole image (of ``shape``; inside its frame, if any): no
        round field of view was found."""
        y0, y1, x0, x1 = self.within or (0, shape[0], 0, shape[1])
        corners = [(y0, x0), (y0, x1 - 1), (y1 - 1, x0), (y1 - 1, x1 - 1)]
        return all((y - self.cy) ** 2 + (x - self.cx) ** 2 <= self.radius**2 for y, x in corners)


def whole_image(shape: tuple[int, int]) -> FieldOfView:
    """A circle enclosing the whole image (used when no dark surround is found)."""
    h, w = shape[:2]
    return FieldOfView((w - 1) / 2.0, (h - 1) / 2.0, math.hypot(w, h) / 2.0 + 1.0)


def _otsu(values: NDArray[np.uint8]) -> int:
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    omega = np.cumsum(hist) / total
    mu = np.cumsum(hist * np.arange(256)) / total
    mu_t = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_b = (mu_t * omega - mu) ** 2 / (omega * (1.0 - omega))
    sigma_b[~np.isfinite(sigma_b)] = 0.0
    return int(np.argmax(sigma_b))


def _kasa_fit(xs: NDArray, ys: NDArray) -> tuple[float, float, float]:
    a = np.stack([xs, ys, np.ones_like(xs)], axis=1)
    b = xs**2 + ys**2
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = sol[0] / 2.0, sol[1] / 2.0
    r = math.sqrt(max(sol[2] + cx**2 + cy**2, 0.0))
    return float(cx), float(cy), r


def detect_fov(rgb: NDArray[np.uint8]) -> FieldOfView:
    """Find the fundus disc in an RGB ``uint8 (H, W, 3)`` image.

    Returns a circle enclosing the whole image when the image has no dark surround (a crop,
    or not a fundus photograph), so downstream code never loses pixels.
    """
    h, w = rgb.shape[:2]
    frame = _inside_frame(rgb)
    fit = _fit_circle(rgb, frame)
    if fit is None or fit.retina_outside > MAX_LIT_OUTSIDE or not (0.1 * min(h, w) < fit.fov.radius < 2.0 * max(h, w)):
        # no disc; or a crop of the retina, the circle round some bright region in it: the whole
        # image, but for a frame round it
        y0, y1, x0, x1 = frame
        whole = whole_image((y1 - y0, x1 - x0))
        return FieldOfView(whole.cx + x0, whole.cy + y0, whole.radius, _within(frame, (h, w)))
    return fit.fov


@dataclass(frozen=True)
class CircleFit:
    """The circle fitted round an image's largest lit region (``fov``, in input pixels) and the
    shares of the pixels beyond 1.05 of its radius that are lit (``lit_outside``) and lit and
    retina-like (``retina_outside``, what :func:`detect_fov` judges by)."""

    fov: FieldOfView
    lit_outside: float
    retina_outside: float


def fit_circle(rgb: NDArray[np.uint8]) -> CircleFit | None:
    """The circle round the largest lit region of ``rgb`` (bright pixels on a copy at most
    ``_WORK_SIDE`` px across, holes filled; a Kasa fit to its boundary off the image's border,
    refitted once without outliers), or None when there is no such region. A frame of one lit
    colour round the photo (a scan's or an export's white border) is left out first."""
    return _fit_circle(rgb, _inside_frame(rgb))


def _within(frame: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``FieldOfView.within`` for the part ``frame`` of an image of ``shape``: None when it is all."""
    return None if frame == (0, shape[0], 0, shape[1]) else frame


def _fit_circle(rgb: NDArray[np.uint8], frame: tuple[int, int, int, int]) -> CircleFit | None:
    """:func:`fit_circle` inside ``frame`` (``(y0, y1, x0, x1)``, from :func:`_inside_frame`)."""
    fy0, fy1, fx0, fx1 = frame
    within = _within(frame, rgb.shape[:2])
    rgb = rgb[fy0:fy1, fx0:fx1]
    h, w = rgb.shape[:2]
    step = max(1, int(math.ceil(max(h, w) / _WORK_SIDE)))
    sub = rgb[::step, ::step]
    small = sub.max(axis=2)
    if small.size < 16:
        return None
    t = _otsu(small)
    dark = np.percentile(small, 2)
    bright = np.percentile(small, 98)
    if bright - dark < 20:  # flat image: no disc to find
        return None
    t = max(t, int(dark) + 8)
    t = min(t, int(dark + 0.15 * (bright - dark)))
    lit = small > t
    labels, n = ndimage.label(lit)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    disc = labels == (int(np.argmax(sizes)) + 1)
    disc = ndimage.binary_fill_holes(disc)
    disc = ndimage.binary_opening(disc, iterations=2)
    if disc.sum() < 0.05 * disc.size:
        return None
    edge = disc & ~ndimage.binary_erosion(disc)
    edge[0, :] = edge[-1, :] = False
    edge[:, 0] = edge[:, -1] = False
    ys, xs = np.nonzero(edge)
    if len(xs) < 20:
        return None
    cx, cy, r = _kasa_fit(xs.astype(np.float64), ys.astype(np.float64))
    # one refit without outliers (notches, reflections at the rim)
    d = np.abs(np.hypot(xs - cx, ys - cy) - r)
    keep = d < max(2.0, 3.0 * float(np.median(d)) + 1.0)
    if keep.sum() >= 20:
        cx, cy, r = _kasa_fit(xs[keep].astype(np.float64), ys[keep].astype(np.float64))
    # back to input pixels: small pixel k covers input pixels k*step .. k*step+step-1
    off = (step - 1) / 2.0
    fov = FieldOfView(cx * step + off + fx0, cy * step + off + fy0, (r + 0.5) * step, within)
    return CircleFit(fov, _lit_outside(lit, cx, cy, r), _lit_outside(_retina_like(sub, lit), cx, cy, r))


def _inside_frame(rgb: NDArray[np.uint8]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the image without the outermost rows and columns that are one lit
    colour edge to edge (every pixel within 12 levels, every channel over 60: a white or light
    frame; a camera's black surround is no frame), less than a fifth of each side (plain that far
    in, the image is of one colour: no frame)."""
    h, w = rgb.shape[:2]

    def plain(line: NDArray) -> bool:
        lo, hi = line.min(axis=0).astype(int), line.max(axis=0).astype(int)
        return bool((hi - lo).max() <= 12 and lo.min() > 60)

    y0, y1, x0, x1 = 0, h, 0, w
    while y0 < h // 5 and plain(rgb[y0, ::4]):
        y0 += 1
    while h - y1 < h // 5 and plain(rgb[y1 - 1, ::4]):
        y1 -= 1
    while x0 < w // 5 and plain(rgb[y0:y1:4, x0]):
        x0 += 1
    while w - x1 < w // 5 and plain(rgb[y0:y1:4, x1 - 1]):
        x1 -= 1
    if y0 >= max(1, h // 5) or h - y1 >= max(1, h // 5) or x0 >= max(1, w // 5) or w - x1 >= max(1, w // 5):
        return 0, h, 0, w  # plain up to a fifth in: an image of one colour, no frame round a photo
    return y0, y1, x0, x1


#: the largest share of lit, retina-like pixels (:func:`_retina_like`) outside a field of view
#: (beyond 1.05 radii): a fundus camera leaves it dark. On the 553 IDRiD photos (54 annotated,
#: 499 not) at most 0.0012 was; on the 359 crops of them (no dark surround) fitted a circle under
#: half the crop's longest side, 0.118 at least: the circle ran round some bright region inside
#: the retina, set the working scale and masked out the rest (on 155 crops of the annotated
#: photos, hemorrhage Dice 0.46 with that circle, 0.65 with the whole crop). A camera's text or
#: info panel in the surround is not retina-like: counted as lit, a gray panel beside the fundus
#: (0.34-0.37 of the surround) or white blocks of text in the corners (0.12-0.14) made whole
#: photos "crops", and the default's hemorrhage Dice fell from 0.73 to 0.07 and 0.01 on the 53
#: annotated photos. benchmarks/README.md "Cropped and gray photos".
MAX_LIT_OUTSIDE = 0.05


def _retina_like(sub: NDArray[np.uint8], lit: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The ``lit`` pixels of ``sub`` (RGB) that could be retina: red the strongest channel, over
    16 levels above the weakest (a camera's white or gray text and panels, a blue title bar are
    not); in a gray photo every lit pixel."""
    if is_gray(sub[lit][::7]):
        return lit
    return lit & _reddish(sub)


def _reddish(px: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Per pixel of ``px`` (``(..., 3)`` RGB): red the strongest channel, over 16 levels above the
    weakest."""
    s = px.astype(np.int16)
    red = s[..., 0]
    return (red >= s[..., 1]) & (red - np.minimum(s[..., 1], s[..., 2]) > 16)


def _lit_outside(lit: NDArray[np.bool_], cx: float, cy: float, r: float) -> float:
    """The share of ``lit`` pixels beyond 1.05 ``r`` of ``(cx, cy)`` (0 when under 2 % of the
    image lies there: a disc that nearly fills the photo)."""
    yy, xx = np.ogrid[0:lit.shape[0], 0:lit.shape[1]]
    outside = (xx - cx) ** 2 + (yy - cy) ** 2 > (1.05 * r) ** 2
    if outside.mean() < 0.02:
        return 0.0
    return float(lit[outside].mean())


#: below this many px across the fundus, a note says the photo is too small for fine lesions
SMALL_FUNDUS_PX = 300


def size_doubt(fov: FieldOfView, work_px: int) -> str | None:
    """A note when the fundus is under ``SMALL_FUNDUS_PX`` across, or None. The bundled default
    on the two sample photos (unseen by it) shrunk so the fundus is D px across, hemorrhage Dice
    against the shrunk mask (2026-12-04): IDRiD_04 0.77 at 1900 px, 0.70 at 416, 0.64 at 300,
    0.63 at 200; IDRiD_16 0.43 at 1707, 0.46 at 416, 0.44 at 300, 0.28 at 200."""
    d = 2.0 * fov.radius
    if d >= SMALL_FUNDUS_PX:
        return None
    return (f"the fundus is only {d:.0f} px across (the model works at {work_px} px): small lesions cannot be "
            "told apart at this size; masks are coarse and may miss or merge lesions")


#: below this many px across the fundus a photo is refused (a thumbnail, a preview): the bundled
#: default on the two sample photos shrunk so the fundus is D px across (2026-12-06): IDRiD_04 Dice
#: 0.53 at 100 px (19 lesions found against 8), 0.21 at 75 (28 against 4), 0.15 at 50; IDRiD_16
#: 0.16 at 150 (30 against 3), 0.06 at 100, 0.02 at 75 (23 against 3): mostly false alarms, counted
#: as lesions in every table
MIN_FUNDUS_PX = 96


def too_small_problem(fov: FieldOfView) -> str | None:
    """Why the fundus is too small to segment (under ``MIN_FUNDUS_PX`` across), or None."""
    d = 2.0 * fov.radius
    if d >= MIN_FUNDUS_PX:
        return None
    return (f"the fundus is only {d:.0f} px across: too small to segment (under {MIN_FUNDUS_PX} px the masks are "
            "mostly false alarms: the sample photos shrunk to 75 px across gave 28 and 23 lesions against 4 and 3); "
            "a thumbnail or preview? segment the full-size photo")


#: below this median brightness of the retina (the brightest channel of each pixel inside the field
#: of view, 0-255) a photo is said to be too dark to trust. IDRiD's 553 photos: the darkest 61, 5 %
#: below 112, median 164. The 53 annotated ones darkened to 1/4 ... 1/12 of their brightness
#: (benchmarks/photo_forms.py --dark, 2026-12-06): the shipped default's mask collapses (Dice under
#: 0.5 against the mask on the photo as it is) in 47 of the 265 darkened copies; 24 is the lowest
#: level that warns of every collapse on every second photo (IDRiD_02, 04, ...), and on the other 27
#: it warns of all 25 of theirs while the copies it leaves unwarned keep a pooled hemorrhage Dice
#: of 0.749 (those photos as they are: 0.749)
DARK_MEDIAN = 24


def _sampled(rgb: NDArray[np.uint8], fov: FieldOfView) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.bool_]]:
    """``rgb`` subsampled to about 512 px, and which of its pixels lie inside 0.9 of the field of
    view's radius (the retina) and outside 1.05 of it (the surround); a frame round the photo is
    neither."""
    step = max(1, max(rgb.shape[:2]) // 512)
    s = rgb[::step, ::step]
    yy, xx = np.mgrid[0:s.shape[0], 0:s.shape[1]]
    d2 = (xx * step - fov.cx) ** 2 + (yy * step - fov.cy) ** 2
    inside = d2 <= (0.9 * fov.radius) ** 2
    outside = d2 >= (1.05 * fov.radius) ** 2
    if fov.within is not None:
        frame = ~fov.within_mask(np.arange(s.shape[0]) * step, np.arange(s.shape[1]) * step)
        inside &= ~frame
        outside &= ~frame
    return s, inside, outside


def retina_median(rgb: NDArray[np.uint8], fov: FieldOfView) -> float | None:
    """The retina's median brightness: each pixel's brightest channel inside the field of view
    (on a subsample), 0-255; None when the field of view holds no pixel."""
    s, inside, _ = _sampled(rgb, fov)
    return float(np.median(s[inside].max(axis=1))) if inside.any() else None


def dark_doubt(rgb: NDArray[np.uint8], fov: FieldOfView) -> str | None:
    """A note when the retina is very dark (an underexposed capture: the flash too weak, the
    pupil too small), or None. A warning, never a refusal: the mask degrades, then collapses,
    as a photo darkens (:data:`DARK_MEDIAN`), and an empty mask would read as "no lesions"."""
    median = retina_median(rgb, fov)
    if median is None or median >= DARK_MEDIAN:
        return None
    return (f"a very dark photo (the retina's median brightness is {median:.0f} of 255; the darkest of IDRiD's 553 "
            f"photos: 61): the model's masks degrade on dark photos (lesions missed, or false ones found); brighten "
            "the capture, or review the whole photo, not only the mask")


#: the most a photo's channels may spread (levels, between the 0.1th and 99.9th percentile) and
#: still be blank: on IDRiD's 553 photos the widest channel spread was at least 144 levels, 36 at a
#: quarter and 14 at a tenth of their brightness (2026-12-05)
BLANK_SPREAD = 10


def blank_problem(rgb: NDArray[np.uint8]) -> str | None:
    """Why ``rgb`` shows nothing to segment, or None: a failed capture (black), a blown-out one
    (white) or one flat colour, every channel within :data:`BLANK_SPREAD` levels over all but
    0.1 % of the pixels at either end. Its empty mask would read as "no lesions"."""
    h, w = rgb.shape[:2]
    step = max(1, max(h, w) // 512)
    px = rgb[::step, ::step].reshape(-1, 3)
    lo, hi = np.percentile(px, [0.1, 99.9], axis=0)
    if float((hi - lo).max()) > BLANK_SPREAD:
        return None
    level = np.median(px, axis=0).round().astype(int)
    what = "black" if level.max() < 40 else "white" if level.min() > 215 else "one flat colour"
    return (f"shows no fundus: the image is blank ({what}, every pixel near RGB {tuple(level.tolist())}; a failed "
            "or blown-out capture?): nothing to segment, and an empty mask would read as 'no lesions'")


#: a gray photo: a red-free fundus photograph, or a colour one saved as gray. On gray copies (the
#: green channel, as a red-free photo shows it) of 27 of IDRiD's annotated photos the shipped
#: default found 52 % of the hemorrhage pixels, against 77 % in colour (fed with a red channel of
#: zeros, ``preprocess.network_input``: 30 % with the gray copied into red; benchmarks/photo_forms.py
#: --gray, 2026-12-05; photos it was trained on, so the comparison, not the level, is the finding)
GRAY_DOUBT = ("a gray photo (red-free?): the model learned from colour fundus photographs and finds fewer "
              "lesions in gray ones (on gray copies of 27 of its training photos, 52 % of the hemorrhage pixels "
              "against 77 % in colour); review the whole photo, not only the mask")


def is_gray(px: NDArray) -> bool:
    """Whether pixels ``(N, 3)`` are gray: R, G and B equal but for a JPEG's rounding (a gray photo
    saved as RGB), on average within 2 levels of their mean."""
    px = np.asarray(px, np.float32)
    return bool(px.size) and float(np.abs(px - px.mean(axis=1, keepdims=True)).mean()) < 2.0


def fundus_doubts(rgb: NDArray[np.uint8], fov: FieldOfView) -> str | None:
    """Why ``rgb`` may not be a fundus photograph the model can read, or None. A warning,
    never a refusal. A gray photo gets :data:`GRAY_DOUBT`.

    Two cues, measured on 221 IDRiD photos (none flagged) and on ordinary photographs:
    a fundus camera leaves the outside of its round field of view black (every IDRiD photo:
    all of it below 40; ordinary photos: a third at most), and the retina is red-dominant
    (red share of R+G+B inside the field: IDRiD 0.47 and more, median 0.63). A photo with no
    dark surround but a red share of 0.5 or more passes as a cropped fundus photo: so
    scikit-image's astronaut, cat and rocket are flagged, its (brown) coffee cup is not."""
    s, inside, outside = _sampled(rgb, fov)
    if not inside.any():
        return None
    px = s[inside].astype(np.float32)
    if is_gray(px):
        return GRAY_DOUBT
    red = float((px[:, 0] / (px.sum(axis=1) + 1e-3)).mean())
    if red < 0.5:  # not clearly red: only a dark surround still says fundus (a red-dominant photo without one: a crop)
        if outside.mean() < 0.02:  # no round field of view was found (the detector's whole image)
            return ("does not look like a fundus photograph: it has no dark surround of a round field of view "
                    f"and is not clearly red (red share {red:.2f}); results may be meaningless")
        out = s[outside]
        dark = float(((out.max(axis=1) < 40) | ~_reddish(out)).mean())  # a camera's text or panel is no retina
        if dark < 0.8:
            return (f"does not look like a fundus photograph: the outside of the round field of view is not dark "
                    f"({dark:.0%} of it is) and the image is not clearly red (red share {red:.2f}); results may "
                    "be meaningless")
    if red < 0.42:
        return (f"does not look like a fundus photograph: it is not red-dominant (red share {red:.2f}); "
                "results may be meaningless")
    return None
