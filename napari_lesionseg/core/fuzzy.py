"""The fuzzy-region map: DALE's partition with label-free statistics (ARCHITECTURE.md 3).

``AE`` is the normalised binary entropy of the (TTA-averaged) probability, ``D`` the
disagreement between TTA views (max minus min probability), and
``F = clip(max(S_tau_ae(AE), S_tau_d(D)) / delta, 0, 1)`` with ``S_tau(u) = max(u - tau, 0)``.
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


def fuzzy_map(prob: NDArray[np.floating], disagreement: NDArray[np.floating] | None,
              tau_ae: float, tau_d: float, delta: float) -> NDArray[np.float32]:
    """Fuzzy membership in [0, 1] per pixel, same shape as ``prob``."""
    s = soft_threshold(binary_entropy(prob), tau_ae)
    if disagreement is not None:
        s = np.maximum(s, soft_threshold(disagreement, tau_d))
    return np.clip(s / np.float32(delta), 0.0, 1.0).astype(np.float32)
