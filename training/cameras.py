"""Simulated fundus cameras: one photograph as another camera would have taken it.

A :class:`Camera` is a chain of what differs between fundus cameras and clinics: sensor size
(``scale``), white balance (``gains``), exposure (``bright``), tone curve (``gamma``), focus
(``blur``, Gaussian sigma in the output camera's pixels), lens fall-off (``vignette``) and JPEG
compression (``quality``). :func:`shoot` applies it; :func:`random_camera` draws one from the
ranges of a :class:`~lesionseg_training.train_config.CameraAugConfig`, so that training can see
each photo through several cameras (``data.cameras``), and ``benchmarks/adapt.py`` uses fixed
ones to measure how a model copes with, and adapts to, a new camera.
"""

from __future__ import annotations

import io
import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.ndimage import gaussian_filter

from .train_config import CameraAugConfig


class Camera(NamedTuple):
    scale: float  # output size / input size
    gains: tuple[float, float, float]  # per RGB channel
    bright: float  # overall gain
    gamma: float  # the tone curve's exponent on [0, 1] intensities
    blur: float  # Gaussian sigma, output pixels (0: sharp)
    vignette: float  # intensity lost at the frame's corners is vignette (0: none)
    quality: int  # JPEG quality 1..100 (100: no JPEG round trip)


IDENTITY = Camera(1.0, (1.0, 1.0, 1.0), 1.0, 1.0, 0.0, 0.0, 100)


def shoot(rgb: NDArray[np.uint8], camera: Camera | tuple) -> NDArray[np.uint8]:
    """``rgb (H, W, 3) uint8`` as ``camera`` takes it: ``(round(H*scale), round(W*scale), 3)``."""
    scale, gains, bright, gamma, blur, vignette, quality = camera
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(rgb)
    if size != (w, h):
        img = img.resize(size, Image.Resampling.LANCZOS)
    a = np.asarray(img, np.float32) / 255.0
    a = np.clip(a * np.asarray(gains, np.float32) * np.float32(bright), 0, 1)
    if gamma != 1.0:
        a **= np.float32(gamma)
    if vignette:
        yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]].astype(np.float32)
        r2 = ((yy - a.shape[0] / 2) / (a.shape[0] / 2)) ** 2 + ((xx - a.shape[1] / 2) / (a.shape[1] / 2)) ** 2
        a *= np.clip(1 - vignette * r2 / 2, 0, 1)[..., None]
    if blur:
        a = gaussian_filter(a, (blur, blur, 0))
    out = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if quality >= 100:
        return out
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def shoot_at_size(rgb: NDArray[np.uint8], camera: Camera | tuple) -> NDArray[np.uint8]:
    """:func:`shoot`, then resized back to ``rgb``'s size (bilinear), so that the input's masks
    and field of view still fit: what a smaller sensor loses is lost, the grid stays."""
    out = shoot(rgb, camera)
    h, w = rgb.shape[:2]
    if out.shape[:2] == (h, w):
        return out
    return np.asarray(Image.fromarray(out).resize((w, h), Image.Resampling.BILINEAR))


def random_camera(rng: np.random.Generator, cfg: CameraAugConfig) -> Camera:
    """One camera drawn from ``cfg``: scale and gamma log-uniform in
    their ranges, the rest uniform; blur only with probability ``cfg.blur_p``."""

    def uni(lo_hi: list[float]) -> float:
        return float(rng.uniform(lo_hi[0], lo_hi[1]))

    def log_uni(lo_hi: list[float]) -> float:
        return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))

    gains = tuple(round(uni(cfg.gains), 3) for _ in range(3))
    blur = round(uni(cfg.blur), 2) if rng.random() < cfg.blur_p else 0.0
    return Camera(round(log_uni(cfg.scale), 3), gains, round(uni(cfg.bright), 3), round(log_uni(cfg.gamma), 3),
                  blur, round(uni(cfg.vignette), 3), int(round(uni(cfg.quality))))
