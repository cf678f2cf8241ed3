"""The fuzzy map: where the model's mask is likely wrong (ARCHITECTURE.md 3).

DALE partitions training pixels by ``F = clip(max(S_tau_ae(AE), S_tau_er(ER)) / delta, 0, 1)``
with ``S_tau(u) = max(u - tau, 0)``, AE and ER the histories of the model's entropy and of its
error against the label (:func:`fuzzy_membership`, shared with training's partition). A photo
at inference has no label, so no ER; what the plugin shows is chosen per model
(``inference.fuzzy.map``):

- ``error_rate``: an estimate of ER itself: the share of pixels at the same calibrated
  probability where the thresholded mask disagreed with the annotation on the model's training
  photos (knots fitted by ``training/fit_review.py``), read off at each pixel's probability;
  in [0, 1], "the probability that the mask is wrong here";
- ``entropy``: the normalised binary entropy of the probability (AE's quantity at one moment);
  what models without the knots get;
- ``head``: the network's own fuzzy head (``network.error_head``), trained with the network to
  predict where its thresholded mask disagrees with the annotation (issue 12's "fuzzy head"):
  DALE's ER learned as a map of the image, not read off the probability; TTA-averaged;
- ``soft_threshold``: the earlier rule, DALE's formula with the TTA views' disagreement
  standing in for ER; measured worse at finding the mask's errors than plain entropy
  (training/README.md, "The fuzzy map").

Whichever it is, it is written as 16-bit PNG (``<stem>_fuzzy.png``, ``round(65535 f)``); the
first two are continuous, ``soft_threshold`` saturates at 0 and 1 by its clip.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .model_config import FuzzyConfig


def binary_entropy(p: NDArray[np.floating]) -> NDArray[np.float32]:
    """``H(p) / ln 2`` in [0, 1]; 0 at p in {0, 1}, 1 at p = 0.5."""
    q = np.clip(np.asarray(p, np.float32), 1e-7, 1 - 1e-7)
    return (-(q * np.log2(q) + (1 - q) * np.log2(1 - q))).astype(np.float32)


def soft_threshold(u: NDArray[np.floating], tau: float) -> NDArray[np.float32]:
    """``max(u - tau, 0)``."""
    return np.maximum(np.asarray(u, np.float32) - np.float32(tau), 0).astype(np.float32)


def fuzzy_membership(ae: NDArray[np.floating], er: NDArray[np.floating] | None, tau_ae: float, tau_er: float,
                     delta: float, combine: str = "or") -> NDArray[np.float32]:
    """DALE's membership ``clip(max(S_tau_ae(AE), S_tau_er(ER)) / delta, 0, 1)`` (``ER``
    optional). ``combine="and"`` takes the minimum instead: a pixel is fuzzy only where the
    model is unsure *and* keeps disagreeing with the label (training's partition)."""
    if combine not in ("or", "and"):
        raise ValueError(f"combine must be 'or' or 'and', not {combine!r}")
    s = soft_threshold(ae, tau_ae)
    if er is not None:
        other = soft_threshold(er, tau_er)
        s = np.maximum(s, other) if combine == "or" else np.minimum(s, other)
    return np.clip(s / np.float32(delta), 0.0, 1.0).astype(np.float32)


def error_rate_map(prob: NDArray[np.floating], knots: list[list[float]]) -> NDArray[np.float32]:
    """The estimated probability that the thresholded mask is wrong, per pixel: the knots
    (calibrated probability -> error share) interpolated linearly at ``prob``."""
    return np.interp(np.asarray(prob, np.float32), knots[0], knots[1]).astype(np.float32)


def fuzzy_map(prob: NDArray[np.floating], disagreement: NDArray[np.floating] | None,
              cfg: FuzzyConfig, head: NDArray[np.floating] | None = None) -> NDArray[np.float32]:
    """The fuzzy map ``cfg.map`` names, in [0, 1] per pixel, same shape as ``prob``
    (``disagreement``: the TTA views' spread, used by ``soft_threshold`` only; ``head``: the
    fuzzy head's probability, used by ``head`` only)."""
    if cfg.map == "head":
        if head is None:
            raise ValueError("inference.fuzzy.map = 'head' needs the network's fuzzy head (network.error_head)")
        return np.clip(np.asarray(head, np.float32), 0.0, 1.0)
    if cfg.map == "error_rate" and cfg.error_rate is not None:
        return error_rate_map(prob, cfg.error_rate)
    if cfg.map == "soft_threshold":
        return fuzzy_membership(binary_entropy(prob), disagreement, cfg.tau_ae, cfg.tau_er, cfg.delta)
    return binary_entropy(prob)
