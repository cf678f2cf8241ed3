"""The model family: one factory for every generator and adversary network.

The configs import without torch (a model config, the review settings and the npe2 reader need
them); the factory and the output head bring torch in when first asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .network_config import AsppConfig, DynamicConfig, EncoderConfig, NetworkConfig, SgdcConfig

if TYPE_CHECKING:
    from .factory import build_model
    from .output import SegOutput

__all__ = [
    "AsppConfig", "DynamicConfig", "EncoderConfig", "NetworkConfig", "SegOutput", "SgdcConfig",
    "build_model",
]


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from .factory import build_model

        return build_model
    if name == "SegOutput":
        from .output import SegOutput

        return SegOutput
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
