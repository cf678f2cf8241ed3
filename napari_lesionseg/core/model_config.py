"""The full config of a trained model: network, preprocessing and inference settings.

Working resolution, normalisation, threshold and tile size travel with the model, so the
plugin, the CLI and evaluation run one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .dataclass_io import require
from .models.network_config import NetworkConfig

FORMAT_VERSION = 1
# Bounds that keep inference memory predictable (the working grid is about fov_diameter^2
# pixels and a tile's activations grow with tile_size^2); peaks at the bounds in
# benchmarks/README.md.
MAX_FOV_DIAMETER = 2048
MAX_TILE_SIZE = 2048


@dataclass
class PreprocessConfig:
    fov_diameter: int = 896  # disc diameter on the working grid, px
    green_contrast_sigma: float | None = 24.0  # working px; None (or 0, TOML has no null): RGB only

    def __post_init__(self) -> None:
        if self.green_contrast_sigma == 0:
            self.green_contrast_sigma = None
        require(32 <= self.fov_diameter <= MAX_FOV_DIAMETER, "preprocess.fov_diameter",
                f"out of range 32..{MAX_FOV_DIAMETER}")
        if self.green_contrast_sigma is not None:
            require(0.5 <= self.green_contrast_sigma <= 500, "preprocess.green_contrast_sigma",
                    "out of range 0.5..500")

    @property
    def channels(self) -> int:
        return 3 + (self.green_contrast_sigma is not None)


@dataclass
class FuzzyConfig:
    """Soft thresholds of the label-free DALE partition (ARCHITECTURE.md 3)."""

    tau_ae: float = 0.5
    tau_er: float = 0.05  # on the TTA views' disagreement, the label-free stand-in for DALE's ER
    delta: float = 0.2

    def __post_init__(self) -> None:
        require(0 <= self.tau_ae < 1 and 0 <= self.tau_er < 1, "inference.fuzzy", "taus must lie in [0, 1)")
        require(0 < self.delta <= 1, "inference.fuzzy.delta", "must lie in (0, 1]")


@dataclass
class InferenceConfig:
    threshold: float = 0.5
    min_lesion_area: int = 0  # input pixels; smaller connected components are dropped
    tile_size: int = 1024  # working px; smaller images run in one tile
    tile_overlap: float = 0.25
    tta: Literal["none", "hflip", "flips"] = "flips"
    fuzzy: FuzzyConfig = field(default_factory=FuzzyConfig)
    # monotone piecewise-linear map of raw probabilities (x and y knots), fitted on validation
    calibration: list[list[float]] | None = None

    def __post_init__(self) -> None:
        require(0.0 < self.threshold < 1.0, "inference.threshold", "must lie in (0, 1)")
        require(0 <= self.min_lesion_area <= 10_000_000, "inference.min_lesion_area", "out of range")
        require(32 <= self.tile_size <= MAX_TILE_SIZE, "inference.tile_size", f"out of range 32..{MAX_TILE_SIZE}")
        require(0.0 <= self.tile_overlap < 0.9, "inference.tile_overlap", "must lie in [0, 0.9)")
        if self.calibration is not None:
            require(len(self.calibration) == 2 and len(self.calibration[0]) == len(self.calibration[1])
                    and 2 <= len(self.calibration[0]) <= 1024, "inference.calibration",
                    "needs two equal lists of 2..1024 knots")


def upgrade_config(raw: dict) -> dict:
    """A ``config.json`` written by an earlier version, in today's names (``inference.fuzzy.
    tau_d`` is ``tau_er``, DALE's name for the same threshold; the unused
    ``network.output_activation`` is dropped); other content unchanged."""
    fuzzy = raw.get("inference", {}).get("fuzzy") if isinstance(raw.get("inference"), dict) else None
    if isinstance(fuzzy, dict) and "tau_d" in fuzzy and "tau_er" not in fuzzy:
        fuzzy = {("tau_er" if k == "tau_d" else k): v for k, v in fuzzy.items()}
        raw = {**raw, "inference": {**raw["inference"], "fuzzy": fuzzy}}
    net = raw.get("network")
    if isinstance(net, dict) and "output_activation" in net:
        # never applied (every model's output was the plain sigmoid); the option was removed
        raw = {**raw, "network": {k: v for k, v in net.items() if k != "output_activation"}}
    return raw


@dataclass
class ModelConfig:
    """``config.json`` of a model folder."""

    format_version: int = FORMAT_VERSION
    name: str = "unnamed"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    weights_sha256: str | None = None  # set when the folder is written
    config_sha256: str | None = None  # this config's own digest, set when the folder is written

    def __post_init__(self) -> None:
        require(self.format_version == FORMAT_VERSION, "format_version",
                f"{self.format_version} is not supported (this version reads {FORMAT_VERSION})")
        require(self.network.in_channels == self.preprocess.channels, "network.in_channels",
                f"{self.network.in_channels} does not match the preprocessing's "
                f"{self.preprocess.channels} channels")
