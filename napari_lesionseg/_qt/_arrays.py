"""Layer data to what the core expects."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.image_io import to_rgb_uint8


def as_rgb_uint8(data: Any) -> np.ndarray:
    """A 2-D gray or RGB(A) layer as RGB ``uint8 (H, W, 3)``, by the same rule as a photo read
    from a file (``image_io.to_rgb_uint8``), so the plugin and the CLI see the same pixels."""
    arr = np.asarray(data)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"expected a 2-D RGB photograph, got an array of shape {arr.shape}")
    return to_rgb_uint8(arr)
