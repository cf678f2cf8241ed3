"""The model family: one factory for every generator and adversary network."""

from .factory import build_model
from .network_config import AsppConfig, DynamicConfig, EncoderConfig, NetworkConfig, SgdcConfig
from .output import SegOutput

__all__ = [
    "AsppConfig", "DynamicConfig", "EncoderConfig", "NetworkConfig", "SegOutput", "SgdcConfig",
    "build_model",
]
