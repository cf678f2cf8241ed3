"""Layer data to what the core expects."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_rgb_uint8(data: Any) -> np.ndarray:
    """A 2-D gray or RGB(A) layer as RGB ``uint8 (H, W, 3)``; other dtypes scaled to 0..255."""
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected a 2-D RGB photograph, got an array of shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        hi = float(arr.max()) if arr.size else 1.0
        arr = np.clip(arr.astype(np.float32) / (hi if hi > 1.0 else 1.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)
