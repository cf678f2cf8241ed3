"""The full config of a trained model: network, preprocessing and inference settings.

Working resolution, normalisation, threshold and tile size travel with the model, so the
plugin, the CLI and evaluation run one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from .dataclass_io import require
from .lesion_types import HE, OUTPUT_TYPES
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
    #: working px; None (or 0, TOML has no null): RGB only; a list: one green-contrast channel per
    #: background scale, in its order (e.g. [24, 96]: small lesions and diffuse ones)
    green_contrast_sigma: float | list[float] | None = 24.0

    def __post_init__(self) -> None:
        if self.green_contrast_sigma == 0 or self.green_contrast_sigma == []:
            self.green_contrast_sigma = None
        require(32 <= self.fov_diameter <= MAX_FOV_DIAMETER, "preprocess.fov_diameter",
                f"out of range 32..{MAX_FOV_DIAMETER}")
        require(len(self.contrast_sigmas) <= 4, "preprocess.green_contrast_sigma", "at most 4 scales")
        for sigma in self.contrast_sigmas:
            require(0.5 <= sigma <= 500, "preprocess.green_contrast_sigma", "out of range 0.5..500")

    @property
    def contrast_sigmas(self) -> list[float]:
        """The green-contrast channels' background scales (none, one or several)."""
        return contrast_sigmas(self.green_contrast_sigma)

    @property
    def channels(self) -> int:
        return 3 + len(self.contrast_sigmas)


def contrast_sigmas(setting: float | list[float] | None) -> list[float]:
    """``preprocess.green_contrast_sigma`` as a list of scales."""
    if setting is None:
        return []
    return [float(s) for s in setting] if isinstance(setting, list) else [float(setting)]


def _check_knots(knots: list[list[float]] | None, name: str, lo: float = 0.0, hi: float = 1.0) -> None:
    """Piecewise-linear knots ``[xs, ys]``: equal lengths 2..1024, xs increasing, all in [lo, hi]."""
    if knots is None:
        return
    require(len(knots) == 2 and len(knots[0]) == len(knots[1]) and 2 <= len(knots[0]) <= 1024, name,
            "needs two equal lists of 2..1024 knots")
    xs, ys = knots
    require(all(b > a for a, b in zip(xs, xs[1:])), name, "x knots must increase")
    require(all(lo <= v <= hi for v in list(xs) + list(ys)), name, f"knots must lie in [{lo}, {hi}]")


@dataclass
class FuzzyConfig:
    """What the fuzzy map is (core/fuzzy.py has the formulas).

    ``map = "error_rate"``: the estimated probability that the mask is wrong at the pixel, read
    from ``error_rate`` (knots: calibrated probability -> share of pixels at that probability
    where the thresholded mask disagreed with the annotation, counted on the model's training
    photos: DALE's ER, its expectation given the prediction). ``"entropy"`` (the default, and
    what folders without knots get): the binary entropy of the probability. ``"soft_threshold"``:
    the earlier rule, ``clip(max(S_tau_ae(entropy), S_tau_er(TTA spread)) / delta, 0, 1)``.
    ``"head"``: the network's fuzzy head (``network.error_head``), trained with it."""

    map: Literal["error_rate", "entropy", "soft_threshold", "head"] = "entropy"
    error_rate: list[list[float]] | None = None
    tau_ae: float = 0.5  # soft_threshold only
    tau_er: float = 0.05  # soft_threshold only: on the TTA views' disagreement
    delta: float = 0.2  # soft_threshold only

    def __post_init__(self) -> None:
        require(0 <= self.tau_ae < 1 and 0 <= self.tau_er < 1, "inference.fuzzy", "taus must lie in [0, 1)")
        require(0 < self.delta <= 1, "inference.fuzzy.delta", "must lie in (0, 1]")
        _check_knots(self.error_rate, "inference.fuzzy.error_rate")
        require(self.map != "error_rate" or self.error_rate is not None, "inference.fuzzy.error_rate",
                "map = 'error_rate' needs the error_rate knots (fit them with python -m lesionseg_training.fit_review)")


@dataclass
class ReviewConfig:
    """How the review queue finds and orders regions (core/review.py).

    Candidate misses are the connected regions where the probability exceeds ``floor`` (None:
    5 % of the threshold) that hold no mask pixel. ``missed_rate`` (knots: a candidate's highest
    probability -> share of such regions that overlapped an annotated lesion) and
    ``false_alarm_rate`` (knots: a lesion's highest probability -> share of such lesions that
    overlapped none) are counted on the model's training photos; without them regions are
    ordered by their mean fuzzy value."""

    floor: float | None = None
    missed_rate: list[list[float]] | None = None
    false_alarm_rate: list[list[float]] | None = None

    def __post_init__(self) -> None:
        require(self.floor is None or 0.0 < self.floor < 1.0, "inference.review.floor", "must lie in (0, 1)")
        _check_knots(self.missed_rate, "inference.review.missed_rate")
        _check_knots(self.false_alarm_rate, "inference.review.false_alarm_rate")

    def floor_for(self, threshold: float) -> float:
        """The probability above which a region is a candidate miss, for a model's threshold."""
        return self.floor if self.floor is not None else 0.05 * threshold


def _check_calibration(knots: list[list[float]] | None, name: str) -> None:
    if knots is not None:
        require(len(knots) == 2 and len(knots[0]) == len(knots[1]) and 2 <= len(knots[0]) <= 1024, name,
                "needs two equal lists of 2..1024 knots")


@dataclass
class TypeInference:
    """Threshold and calibration of one output other than HE (``network.outputs``); HE's are
    ``inference.threshold`` / ``inference.calibration``, as in every HE-only folder."""

    name: str = "OD"
    threshold: float = 0.5
    calibration: list[list[float]] | None = None

    def __post_init__(self) -> None:
        require(self.name in OUTPUT_TYPES and self.name != HE, "inference.types.name",
                f"{self.name!r} is not one of {list(OUTPUT_TYPES[1:])}")
        require(0.0 < self.threshold < 1.0, f"inference.types.{self.name}.threshold", "must lie in (0, 1)")
        _check_calibration(self.calibration, f"inference.types.{self.name}.calibration")


@dataclass
class InferenceConfig:
    threshold: float = 0.5
    min_lesion_area: int = 0  # input pixels; smaller connected components are dropped
    tile_size: int = 1024  # working px; smaller images run in one tile
    tile_overlap: float = 0.25
    tta: Literal["none", "hflip", "flips"] = "flips"
    fuzzy: FuzzyConfig = field(default_factory=FuzzyConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    # monotone piecewise-linear map of raw probabilities (x and y knots), fitted on validation
    calibration: list[list[float]] | None = None
    types: list[TypeInference] = field(default_factory=list)  # the other outputs' (network.outputs)
    # Working grids (px across the disc) the network also runs at, besides the model's own
    # (preprocess.fov_diameter); every grid's probabilities are brought onto the model's grid
    # and averaged before calibration (multi-scale inference; each grid costs a pass).
    extra_grids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(0.0 < self.threshold < 1.0, "inference.threshold", "must lie in (0, 1)")
        require(all(isinstance(g, int) and 32 <= g <= MAX_FOV_DIAMETER for g in self.extra_grids)
                and len(set(self.extra_grids)) == len(self.extra_grids), "inference.extra_grids",
                f"must be distinct whole numbers of px in 32..{MAX_FOV_DIAMETER}")
        require(0 <= self.min_lesion_area <= 10_000_000, "inference.min_lesion_area", "out of range")
        require(32 <= self.tile_size <= MAX_TILE_SIZE, "inference.tile_size", f"out of range 32..{MAX_TILE_SIZE}")
        require(0.0 <= self.tile_overlap < 0.9, "inference.tile_overlap", "must lie in [0, 0.9)")
        _check_calibration(self.calibration, "inference.calibration")
        names = [t.name for t in self.types]
        require(len(set(names)) == len(names), "inference.types", f"{names} names a type twice")

    def for_type(self, name: str) -> tuple[float, list[list[float]] | None]:
        """``(threshold, calibration)`` of output ``name`` (defaults for a type not listed)."""
        if name == HE:
            return self.threshold, self.calibration
        t = next((t for t in self.types if t.name == name), TypeInference(name))
        return t.threshold, t.calibration

    def with_type(self, name: str, threshold: float, calibration: list[list[float]] | None) -> InferenceConfig:
        """A copy with output ``name``'s threshold and calibration set."""
        if name == HE:
            return replace(self, threshold=threshold, calibration=calibration)
        others = [t for t in self.types if t.name != name]
        order = {n: i for i, n in enumerate(OUTPUT_TYPES)}
        return replace(self, types=sorted(others + [TypeInference(name, threshold, calibration)],
                                          key=lambda t: order[t.name]))


def parse_grids(text: str) -> list[int]:
    """``"704,1024"`` -> [704, 1024] (``""``: none), checked as ``inference.extra_grids`` is;
    a ConfigError says what is wrong with ``text``."""
    from .dataclass_io import ConfigError

    try:
        grids = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise ConfigError(f"extra grids {text!r}: not a comma-separated list of whole numbers of px") from None
    try:
        InferenceConfig(extra_grids=grids)
    except ConfigError as err:
        raise ConfigError(f"extra grids {text!r}: {err}") from None
    return grids


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
        extra = [t.name for t in self.inference.types if t.name not in self.network.outputs]
        require(not extra, "inference.types", f"{extra} are not among network.outputs {self.network.outputs}")
        require(self.inference.fuzzy.map != "head" or self.network.error_head, "inference.fuzzy.map",
                "'head' needs a network with a fuzzy head (network.error_head = true)")

    @property
    def grids(self) -> tuple[int, ...]:
        """Every working grid inference runs on (px across the disc): the model's own first."""
        return (self.preprocess.fov_diameter, *self.inference.extra_grids)

    def with_extra_grids(self, grids: list[int]) -> ModelConfig:
        """A copy whose inference also runs on ``grids`` (``inference.extra_grids``)."""
        return replace(self, inference=replace(self.inference, extra_grids=list(grids)))
