"""The network config: the constructor arguments of every network ``build_model`` makes.

It is saved beside the weights (``config.json`` of a model folder), so a folder rebuilds its
own network. Field names follow METHODS.md section 6.4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..dataclass_io import require
from ..lesion_types import HE, OUTPUT_TYPES

MAX_WIDTH = 4096
MAX_MEMBERS = 4  # networks averaged in one model (each costs a full network pass)


@dataclass
class EncoderConfig:
    """ResNet encoder of the DynSegNet U-Net (torchvision parameter names)."""

    type: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    width: int = 64
    blocks: list[int] | None = None  # None: the standard [2,2,2,2] / [3,4,6,3]
    output_stride: Literal[16, 32] = 32
    weights_path: str | None = None  # a local ImageNet state-dict file (never downloaded)

    def __post_init__(self) -> None:
        require(1 <= self.width <= 512, "encoder.width", f"{self.width} is out of range 1..512")
        if self.blocks is not None:
            require(len(self.blocks) == 4 and all(1 <= b <= 64 for b in self.blocks),
                    "encoder.blocks", "needs four block counts in 1..64")


@dataclass
class AsppConfig:
    enabled: bool = True
    channels: int = 256
    rates: list[int] = field(default_factory=lambda: [1, 6, 12, 18])
    pool_norm: Literal["none", "gn"] = "none"

    def __post_init__(self) -> None:
        require(1 <= self.channels <= MAX_WIDTH, "aspp.channels", "out of range")
        require(1 <= len(self.rates) <= 8 and all(1 <= r <= 64 for r in self.rates),
                "aspp.rates", "needs 1..8 rates in 1..64")


@dataclass
class DynamicConfig:
    """DynSegNet's dynamic adaptation (METHODS.md 1.4)."""

    mode: Literal["off", "gates", "literal"] = "off"
    eta: float = 0.01
    clip: float = 1.0
    targets: list[Literal["skip", "res", "aspp"]] = field(default_factory=lambda: ["skip", "res", "aspp"])


@dataclass
class SgdcConfig:
    """Structure-guided dynamic convolution (METHODS.md 3)."""

    enabled: bool = False
    positions: list[Literal["s4", "s8"]] = field(default_factory=lambda: ["s4"])
    guide_ch: int = 16
    bottleneck: int = 256
    heads: int = 4
    kernel: int = 7
    mlp_ratio: float = 4.0
    ls_init: float = 1e-6
    sobel_mode: Literal["sum", "depthwise"] = "sum"
    refiner_reduction: int = 4
    edge_lambda: float = 3.0

    def __post_init__(self) -> None:
        require(self.kernel % 2 == 1 and 1 <= self.kernel <= 15, "sgdc.kernel", "must be odd, 1..15")
        require(1 <= self.heads <= 64, "sgdc.heads", "out of range 1..64")
        require(1 <= self.guide_ch <= 1024 and 1 <= self.bottleneck <= MAX_WIDTH, "sgdc", "widths out of range")


@dataclass
class NetworkConfig:
    """Which generator to build and its widths. ``arch`` picks the family:

    - ``unet_small``: light CPU U-Net (``widths``, optional attention gates / residual blocks);
    - ``dynsegnet_unet``: ResNet encoder, ASPP, attention gates, residual decoder, gates, SGDC;
    - ``segan_segmentor``: SegAN's 4x4-conv encoder / resize-conv decoder.
    """

    arch: Literal["unet_small", "dynsegnet_unet", "segan_segmentor"] = "unet_small"
    in_channels: int = 4
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    aspp: AsppConfig = field(default_factory=AsppConfig)
    attention_gates: bool = False
    residual_decoder: bool = False
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 32])
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)
    sgdc: SgdcConfig = field(default_factory=SgdcConfig)
    segan_width: int = 64
    prior: float = 0.01  # the output bias starts at logit(prior)
    # the output channels in order (core/lesion_types.py); HE first, so HE-only code reads channel 0
    outputs: list[str] = field(default_factory=lambda: [HE])
    #: issue 12's fuzzy head, trained with the network: one more 1x1 conv on the decoder's last
    #: features, predicting where the thresholded hemorrhage mask is wrong (``SegOutput.error_logits``;
    #: ``inference.fuzzy.map = "head"`` shows it). ``unet_small`` only.
    error_head: bool = False
    #: how many networks of this description the model averages (``ensemble.MeanEnsemble``); 1: one
    members: int = 1

    def __post_init__(self) -> None:
        require(1 <= self.members <= MAX_MEMBERS, "network.members", f"{self.members} is out of range 1..{MAX_MEMBERS}")
        require(self.members == 1 or (self.dynamic.mode == "off" and not self.sgdc.enabled), "network.members",
                "an ensemble averages probabilities only: its members cannot have dynamic gates or SGDC")
        require(not self.error_head or self.arch == "unet_small", "network.error_head",
                f"is built for arch 'unet_small' only (not {self.arch!r})")
        require(bool(self.outputs) and self.outputs[0] == HE, "network.outputs", "must start with \"HE\"")
        require(len(set(self.outputs)) == len(self.outputs) and set(self.outputs) <= set(OUTPUT_TYPES),
                "network.outputs", f"{self.outputs} must name distinct types of {list(OUTPUT_TYPES)}")
        require(1 <= self.in_channels <= 16, "network.in_channels", f"{self.in_channels} is out of range 1..16")
        require(2 <= len(self.widths) <= 7 and all(1 <= w <= MAX_WIDTH for w in self.widths),
                "network.widths", f"needs 2..7 widths in 1..{MAX_WIDTH}")
        require(len(self.decoder_channels) == 4 and all(1 <= w <= MAX_WIDTH for w in self.decoder_channels),
                "network.decoder_channels", "needs four widths")
        require(1 <= self.segan_width <= 1024, "network.segan_width", "out of range 1..1024")
        require(0.0 < self.prior < 1.0, "network.prior", "must lie in (0, 1)")

    @property
    def stride(self) -> int:
        """Total stride: input sides must be a multiple of it (inference pads to it)."""
        if self.arch == "unet_small":
            return 2 ** (len(self.widths) - 1)
        if self.arch == "segan_segmentor":
            return 16
        return 32
