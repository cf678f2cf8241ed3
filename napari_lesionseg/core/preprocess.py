"""From an input photograph to the network's working image, and back.

The working image is the field-of-view box, rescaled so that the disc's diameter is
``fov_diameter`` pixels (the model's working resolution, stored in its config). The network
input has the normalised RGB channels (zero mean, unit variance inside the disc) and,
optionally, a green-contrast channel: green minus its local background, which makes small
dark hemorrhages stand out independently of illumination.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image
from scipy import fft as sfft

from .fov import FieldOfView, detect_fov, is_gray
from .model_config import contrast_sigmas
from .runtime import cpu_pool, row_blocks


@dataclass(frozen=True)
class Geometry:
    """How the working image maps onto the input image.

    ``box = (y0, y1, x0, x1)`` in input pixels; the working image of ``work_shape`` covers the
    box exactly (its pixel edges coincide with the box's edges), so resizing the working grid
    back to the box size and pasting it at ``box`` is the exact inverse mapping.
    """

    input_shape: tuple[int, int]
    box: tuple[int, int, int, int]
    work_shape: tuple[int, int]
    fov: FieldOfView

    @property
    def scale(self) -> tuple[float, float]:
        y0, y1, x0, x1 = self.box
        return self.work_shape[0] / (y1 - y0), self.work_shape[1] / (x1 - x0)

    def to_input(self, wy: float | NDArray, wx: float | NDArray) -> tuple[float | NDArray, float | NDArray]:
        """Input-pixel coordinates of working-grid coordinates ``(wy, wx)`` (pixel centres map
        to pixel centres)."""
        sy, sx = self.scale
        return self.box[0] + (wy + 0.5) / sy - 0.5, self.box[2] + (wx + 0.5) / sx - 0.5

    def work_fov_mask(self) -> NDArray[np.bool_]:
        """The disc on the working grid."""
        h, w = self.work_shape
        ys, xs = self.to_input(np.arange(h), np.arange(w))
        disc = ((ys[:, None] - self.fov.cy) ** 2 + (xs[None, :] - self.fov.cx) ** 2) <= self.fov.radius**2
        return disc & self.fov.within_mask(ys, xs) if self.fov.within is not None else disc

    def input_fov_mask(self) -> NDArray[np.bool_]:
        """The disc on the input grid."""
        return self.fov.mask(self.input_shape)

    def box_fov_mask(self) -> NDArray[np.bool_]:
        """The disc on the input grid, inside the box only (``input_fov_mask()[box]``)."""
        y0, y1, x0, x1 = self.box
        return self.fov.mask((y1 - y0, x1 - x0), offset=(float(y0), float(x0)))


def plan_geometry(shape: tuple[int, int], fov: FieldOfView, fov_diameter: int) -> Geometry:
    """Box and working size for an input of ``shape`` with its disc ``fov``."""
    y0, y1, x0, x1 = fov.box(shape)
    s = float(fov_diameter) / max(fov.diameter, 1.0)
    wh = max(1, int(round((y1 - y0) * s)))
    ww = max(1, int(round((x1 - x0) * s)))
    return Geometry((int(shape[0]), int(shape[1])), (y0, y1, x0, x1), (wh, ww), fov)


def to_work(rgb: NDArray[np.uint8], geom: Geometry) -> NDArray[np.uint8]:
    """Crop ``rgb (H, W, 3)`` to the box and resize it to ``work_shape`` (area-weighted)."""
    y0, y1, x0, x1 = geom.box
    h, w = geom.work_shape
    if (y1 - y0, x1 - x0) == (h, w):
        return np.ascontiguousarray(rgb[y0:y1, x0:x1])
    if h >= y1 - y0:  # enlarging (a small photo)
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR))
    return box_downscale(rgb[y0:y1, x0:x1], h, w)


def box_downscale(img: NDArray[np.uint8], h: int, w: int, bands: int = 2) -> NDArray[np.uint8]:
    """Pillow's BOX resize of ``img (H, W, 3)`` to ``(h, w)``, in horizontal bands on threads.

    Pillow releases the GIL while resampling, and each band converts only its own rows: the
    same bytes as one ``Image.resize`` (each band gets the input rows its filter windows reach,
    plus a margin, and the box argument places every window exactly where the whole resize
    puts it). Measured: benchmarks/README.md."""
    src_h, src_w = img.shape[:2]
    scale = src_h / h

    def band(rows: slice) -> NDArray[np.uint8]:
        a, b = rows.start, rows.stop
        lo = max(0, int(a * scale) - 4)
        hi = min(src_h, int(math.ceil(b * scale)) + 4)
        part = Image.fromarray(np.ascontiguousarray(img[lo:hi]))
        return np.asarray(part.resize((w, b - a), Image.Resampling.BOX, box=(0, a * scale - lo, src_w, b * scale - lo)))

    return np.concatenate(list(cpu_pool().map(band, row_blocks(h, bands))))


def mask_to_work(mask: NDArray[np.uint8], geom: Geometry) -> NDArray[np.uint8]:
    """Bring a label map (0/1/255) onto the working grid.

    A working pixel is lesion when at least a third of the input pixels it covers are lesion
    (so thin lesions survive downscaling), and 255 (ignore) when more of it is unsure than
    lesion.
    """
    y0, y1, x0, x1 = geom.box
    crop = mask[y0:y1, x0:x1]
    h, w = geom.work_shape
    les = np.asarray(Image.fromarray((crop == 1).astype(np.float32)).resize((w, h), Image.Resampling.BOX))
    ign = np.asarray(Image.fromarray((crop == 255).astype(np.float32)).resize((w, h), Image.Resampling.BOX))
    out = (les >= 1.0 / 3.0).astype(np.uint8)
    out[(ign > les) & (ign > 0.5)] = 255
    return out


def from_work(work: NDArray[np.float32] | torch.Tensor, geom: Geometry,
              disc: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
    """Resize a working-grid map ``(h, w)`` back to the box and paste it into a zero image;
    with ``disc`` (:meth:`Geometry.box_fov_mask`) zero outside the disc too, in the same pass.

    Only the margins outside the box are cleared (not the whole image first): for an IDRiD
    photo the box is 80 % of it."""
    y0, y1, x0, x1 = geom.box
    h, w = geom.input_shape
    t = torch.as_tensor(work, dtype=torch.float32)[None, None]
    up = F.interpolate(t, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0].numpy()
    out = np.empty((h, w), dtype=np.float32)
    out[:y0] = 0
    out[y1:] = 0
    out[y0:y1, :x0] = 0
    out[y0:y1, x1:] = 0
    if disc is None:
        out[y0:y1, x0:x1] = up
    else:
        np.multiply(up, disc, out=out[y0:y1, x0:x1])
    return out


def gaussian_kernel(sigma: float, truncate: float = 3.0) -> NDArray[np.float64]:
    """The 1-D kernel ``scipy.ndimage.gaussian_filter`` uses (radius ``int(truncate*sigma+0.5)``)."""
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur_zero_padded(planes: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """Gaussian blur of ``(n, h, w)`` planes with zeros outside (``gaussian_filter(mode=
    "constant", truncate=3)``) by one 2-D FFT convolution, equal to it within 1e-6 and faster
    at the sigmas we use; by ``scipy.fft`` itself: ``scipy.signal`` costs every command 0.7 s
    to import (benchmarks/README.md)."""
    k = gaussian_kernel(sigma)
    k2 = np.outer(k, k).astype(np.float32)
    r = len(k) // 2
    n, h, w = planes.shape
    full = (h + 2 * r, w + 2 * r)  # the full convolution's size; "same" is its centre
    size = (sfft.next_fast_len(full[0], True), sfft.next_fast_len(full[1], True))
    spec = sfft.rfft2(planes, s=size, axes=(1, 2)) * sfft.rfft2(k2, s=size)
    return np.ascontiguousarray(sfft.irfft2(spec, s=size, axes=(1, 2))[:, r:r + h, r:r + w], dtype=np.float32)


def green_contrast(green: NDArray[np.float32], fov_mask: NDArray[np.bool_], sigma: float) -> NDArray[np.float32]:
    """Green minus its local background (normalised Gaussian blur inside the disc)."""
    m = fov_mask.astype(np.float32)
    num, den = blur_zero_padded(np.stack([green * m, m]), sigma)
    bg = num / np.maximum(den, 1e-3)
    return ((green - bg) * m).astype(np.float32)


#: what :func:`network_input` gives; network inputs cached by the training module under another
#: version are made again (2, 2026-12-05: a gray photo's red channel is zeros; 3, that evening:
#: a camera's text or panel in the dark surround no longer makes the whole photo the field of view;
#: 4: a frame of one lit colour round the photo is left out of the field of view; 5: round a crop too)
INPUT_VERSION = 5


def network_input(work_rgb: NDArray[np.uint8], fov_mask: NDArray[np.bool_],
                  green_contrast_sigma: float | list[float] | None) -> NDArray[np.float32]:
    """The network's input ``float32 (C, h, w)``: RGB standardised inside the disc (C = 3),
    plus a standardised green-contrast channel per background scale in ``green_contrast_sigma``
    (one when it is a number: C = 4). Zero outside the disc.

    A gray photo (red-free, or a colour one saved as gray) gets a red channel of zeros: a colour
    photo's red channel shows little of the vessels and lesions, and the gray copied into it
    made the shipped default find 30 % of the hemorrhage pixels of gray copies of IDRiD photos
    where it finds 52 % so (benchmarks/README.md "Cropped and gray photos")."""
    x = work_rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    m = fov_mask if fov_mask.any() else np.ones(fov_mask.shape, bool)
    # the green-contrast blurs (FFTs: the larger part) run beside the RGB standardisation
    gc_jobs = [cpu_pool().submit(green_contrast, x[..., 1], m, s) for s in contrast_sigmas(green_contrast_sigma)]
    gray = is_gray(work_rgb[::4, ::4][m[::4, ::4]])
    chans = []
    for c in range(3):
        ch = x[..., c]
        if c == 0 and gray:
            chans.append(np.zeros_like(ch))
            continue
        v = ch[m]
        chans.append((ch - v.mean()) / max(float(v.std()), 1e-3))
    for job in gc_jobs:
        gc = job.result()
        chans.append(gc / max(float(gc[m].std()), 1e-3))
    out = np.stack(chans).astype(np.float32)
    out *= m[None]
    return out


def prepare(rgb: NDArray[np.uint8], fov_diameter: int, green_contrast_sigma: float | list[float] | None,
            fov: FieldOfView | None = None) -> tuple[NDArray[np.float32], Geometry, NDArray[np.bool_]]:
    """Input photograph to ``(network input (C, h, w), geometry, working-grid disc mask)``."""
    return prepare_with_work(rgb, fov_diameter, green_contrast_sigma, fov)[:3]


def prepare_with_work(rgb: NDArray[np.uint8], fov_diameter: int, green_contrast_sigma: float | list[float] | None,
                      fov: FieldOfView | None = None
                      ) -> tuple[NDArray[np.float32], Geometry, NDArray[np.bool_], NDArray[np.uint8]]:
    """:func:`prepare`, and the working image ``uint8 (h, w, 3)`` the input was made from (a
    coarser grid of the same photo can be made from it without reading the photo again:
    :func:`coarser`)."""
    fov = fov or detect_fov(rgb)
    geom = plan_geometry(rgb.shape[:2], fov, fov_diameter)
    work = to_work(rgb, geom)
    disc = geom.work_fov_mask()
    return network_input(work, disc, green_contrast_sigma), geom, disc, work


def coarser(rgb: NDArray[np.uint8], work: NDArray[np.uint8] | None, fov: FieldOfView, fov_diameter: int,
            green_contrast_sigma: float | list[float] | None
            ) -> tuple[NDArray[np.float32], Geometry, NDArray[np.bool_]]:
    """:func:`prepare` on a grid of ``fov_diameter``, from ``work`` (a finer working image of the
    same photo and field of view, :func:`prepare_with_work`) when it is finer, box-downscaled:
    a fraction of the time of reading the whole photo again; else from ``rgb``."""
    geom = plan_geometry(rgb.shape[:2], fov, fov_diameter)
    h, w = geom.work_shape
    img = box_downscale(work, h, w) if work is not None and work.shape[0] > h and work.shape[1] > w \
        else to_work(rgb, geom)
    disc = geom.work_fov_mask()
    return network_input(img, disc, green_contrast_sigma), geom, disc
