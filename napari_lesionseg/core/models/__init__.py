"""The model family: one factory for every generator and adversary network."""

from .config import AsppConfig, DynamicConfig, EncoderConfig, NetworkConfig, SgdcConfig
from .factory import build_model
from .output import SegOutput

__all__ = [
    "AsppConfig", "DynamicConfig", "EncoderConfig", "NetworkConfig", "SegOutput", "SgdcConfig",
    "build_model",
]
