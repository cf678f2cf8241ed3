"""``build_model(config)``: the one place networks are constructed, for training and inference."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..dataclass_io import from_dict
from .network_config import NetworkConfig


def build_model(config: NetworkConfig | dict[str, Any]) -> nn.Module:
    """Build the generator described by ``config`` (a NetworkConfig or its dict form); with
    ``members`` > 1, that many of it averaged (:class:`.ensemble.MeanEnsemble`)."""
    cfg = config if isinstance(config, NetworkConfig) else from_dict(NetworkConfig, config, "network")
    if cfg.members > 1:
        from dataclasses import replace

        from .ensemble import MeanEnsemble

        return MeanEnsemble([build_model(replace(cfg, members=1)) for _ in range(cfg.members)])
    if cfg.arch == "unet_small":
        from .unet_small import UNetSmall

        return UNetSmall(cfg)
    if cfg.arch == "dynsegnet_unet":
        from .dynsegnet import DynSegNet

        return DynSegNet(cfg)
    if cfg.arch == "segan_segmentor":
        from .segan import SeganSegmentor

        return SeganSegmentor(cfg)
    raise ValueError(f"unknown arch {cfg.arch!r}")  # pragma: no cover - Literal-checked
