"""The fuzzy-region map: DALE's partition with label-free statistics (ARCHITECTURE.md 3).

DALE's rule is ``F = clip(max(S_tau_ae(AE), S_tau_er(ER)) / delta, 0, 1)`` with
``S_tau(u) = max(u - tau, 0)`` (:func:`fuzzy_membership`, shared with training's partition).
In training ``ER`` is the error against the label; at inference, with no label, ``AE`` is the
normalised binary entropy of the (TTA-averaged) probability and the disagreement between TTA
views (max minus min probability) stands in for ``ER``, with the same threshold name.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


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


def fuzzy_map(prob: NDArray[np.floating], disagreement: NDArray[np.floating] | None,
              tau_ae: float, tau_er: float, delta: float) -> NDArray[np.float32]:
    """Label-free fuzzy membership in [0, 1] per pixel, same shape as ``prob``."""
    return fuzzy_membership(binary_entropy(prob), disagreement, tau_ae, tau_er, delta)
