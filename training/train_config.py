"""Training config: one dataclass tree, read from TOML, overridden by ``--set key=value``.

The resolved config is written into the run folder (``config.toml`` as JSON-compatible TOML
would need a writer; we write ``config.json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from napari_lesionseg.core.dataclass_io import ConfigError, from_dict, merge, require, set_dotted
from napari_lesionseg.core.lesion_types import OUTPUT_TYPES
from napari_lesionseg.core.model_config import ModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class AugmentConfig:
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    brightness: float = 0.15  # +- shift of the standardised channels
    contrast: float = 0.15  # +- relative gain
    gaussian_noise_sigma: float = 0.05
    noise_p: float = 0.5
    #: random rescaling of a crop's content, log-uniform in [low, high] (1.25: lesions a quarter
    #: larger than on the working grid); [1, 1], the default, draws nothing
    zoom: list[float] = field(default_factory=lambda: [1.0, 1.0])

    def __post_init__(self) -> None:
        z = self.zoom
        require(len(z) == 2 and 0.25 <= z[0] <= z[1] <= 4.0, "data.augment.zoom",
                "must be [low, high] with 0.25 <= low <= high <= 4")


# (setting, lowest, highest) of a simulated camera, in training/cameras.py Camera's order
_CAMERA_BOUNDS = (("scale", 0.05, 1.0), ("gains", 0.1, 4.0), ("bright", 0.1, 4.0), ("gamma", 0.2, 5.0),
                  ("blur", 0.0, 20.0), ("vignette", 0.0, 1.0), ("quality", 1.0, 100.0))


@dataclass
class CameraAugConfig:
    """Training photos seen through simulated cameras (``training/cameras.py``): ``versions``
    cameras drawn per training photo (seeded by ``seed`` and the photo's id, so every run and
    fold sees the same ones), each prepared once like the photo itself; a crop comes from one of
    them with probability ``share``. ``share = 0`` (the default): clean photos only."""

    share: float = 0.0
    versions: int = 2
    seed: int = 0
    scale: list[float] = field(default_factory=lambda: [0.4, 1.0])  # log-uniform
    gains: list[float] = field(default_factory=lambda: [0.8, 1.2])  # per channel
    bright: list[float] = field(default_factory=lambda: [0.7, 1.3])
    gamma: list[float] = field(default_factory=lambda: [0.75, 1.4])  # log-uniform
    blur: list[float] = field(default_factory=lambda: [0.3, 2.5])  # sigma, the camera's pixels
    blur_p: float = 0.7
    vignette: list[float] = field(default_factory=lambda: [0.0, 0.5])
    quality: list[float] = field(default_factory=lambda: [25.0, 95.0])  # JPEG
    # one camera for every photo instead of drawn ones: [scale, [r, g, b gains], brightness, gamma,
    # blur, vignetting, JPEG quality] (training/cameras.py Camera), e.g. benchmarks/adapt.py's camera
    # B, to learn what a network trained on that camera alone reaches (the ranges are then unused)
    fixed: list[Any] | None = None

    def __post_init__(self) -> None:
        require(0.0 <= self.share <= 1.0, "data.cameras.share", "must lie in [0, 1]")
        require(1 <= self.versions <= 16, "data.cameras.versions", "out of range 1..16")
        require(0.0 <= self.blur_p <= 1.0, "data.cameras.blur_p", "must lie in [0, 1]")
        for name, lo, hi in _CAMERA_BOUNDS:
            r = getattr(self, name)
            require(len(r) == 2 and lo <= r[0] <= r[1] <= hi, f"data.cameras.{name}",
                    f"must be [low, high] with {lo} <= low <= high <= {hi}")
        if self.fixed is not None:  # each setting within the same bounds as the drawn cameras'
            f = self.fixed
            shape_ok = isinstance(f, list) and len(f) == 7 and isinstance(f[1], list) and len(f[1]) == 3
            values = [[f[0]], f[1], *([v] for v in f[2:])] if shape_ok else []
            require(shape_ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) and lo <= v <= hi
                                     for (_, lo, hi), vs in zip(_CAMERA_BOUNDS, values) for v in vs),
                    "data.cameras.fixed", "must be [scale, [r, g, b], brightness, gamma, blur, vignetting, quality], "
                    "each within " + ", ".join(f"{n} [{lo}, {hi}]" for n, lo, hi in _CAMERA_BOUNDS))


@dataclass
class HardNegativeConfig:
    """Online hard-negative crops (``training/hard_negatives.py``): during training, each crop's
    most confident false alarm (the hemorrhage probability above ``threshold`` on a pixel labelled
    background, at least ``margin`` pixels from any lesion) is remembered per photo, the last
    ``memory`` of them; of the crops not centred on a lesion, ``share`` are centred on one of the
    photo's remembered false alarms when it has any. ``share = 0`` (the default): off, and the
    crops are drawn exactly as without it."""

    share: float = 0.0
    threshold: float = 0.5
    memory: int = 64
    margin: int = 8

    def __post_init__(self) -> None:
        require(0.0 <= self.share <= 1.0, "data.hard_negatives.share", "must lie in [0, 1]")
        require(0.0 < self.threshold < 1.0, "data.hard_negatives.threshold", "must lie in (0, 1)")
        require(1 <= self.memory <= 4096, "data.hard_negatives.memory", "out of range 1..4096")
        require(0 <= self.margin <= 64, "data.hard_negatives.margin", "out of range 0..64")


@dataclass
class DataConfig:
    images: str | None = None
    masks: str | None = None
    layout: Literal["auto", "idrid", "pairs", "corrections"] = "auto"
    val_ids: list[str] | None = None  # explicit validation image ids (file stems)
    val_every: int = 6  # otherwise every n-th image (sorted by id) validates
    val_offset: int = 3
    #: a final model after cross-validation: every photo trains, the model kept is the last (no
    #: checkpoint is chosen), and the photos that validate, calibrate and set the threshold are
    #: ``val_ids`` or every k-th of the training photos (``FINAL_CALIBRATION_PHOTOS`` of them),
    #: in-sample, as the folds' models were calibrated (``benchmarks/compare_presets.py``)
    final: bool = False
    exclude_ids: list[str] = field(default_factory=list)
    crop_size: int = 256
    batch_size: int = 8
    lesion_crop_fraction: float = 0.625
    centre_types: list[str] = field(default_factory=lambda: ["HE"])  # what lesion-centred crops centre on
    #: how a lesion-centred crop picks its centre: any lesion pixel (large lesions in proportion to
    #: their area) or first a lesion, each as likely, then one of its pixels
    centre_on: Literal["pixel", "lesion"] = "pixel"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cameras: CameraAugConfig = field(default_factory=CameraAugConfig)
    hard_negatives: HardNegativeConfig = field(default_factory=HardNegativeConfig)
    cache_dir: str | None = None
    #: self-training: a folder of a teacher's pseudo-labelled photos (training/pseudo_labels.py),
    #: drawn for ``pseudo_share`` of the crops besides the annotated photos
    pseudo_labels: str | None = None
    pseudo_share: float = 0.0
    #: the pseudo-labelled crops' target: the teacher's calibrated probability on every pixel of the
    #: disc (distillation; a folder labelled since 2026-12-06) instead of its hard labels with the
    #: band between ``lo`` and ``hi`` ignored; annotated crops keep their masks. HE-only models
    pseudo_soft: bool = False
    #: mean-teacher consistency (``loss.consistency_weight``): a folder of photos nobody annotated,
    #: those that are the same photograph as one in ``unlabelled_not_like`` left out (a fold's own
    #: photos must not come back unlabelled); ``unlabelled_limit`` > 0: the first N only
    unlabelled: str | None = None
    unlabelled_not_like: str | None = None
    unlabelled_limit: int = 0

    def __post_init__(self) -> None:
        require(16 <= self.crop_size <= 4096, "data.crop_size", "out of range 16..4096")
        require(0.0 <= self.pseudo_share <= 0.9, "data.pseudo_share", "must lie in [0, 0.9]")
        require((self.pseudo_labels is None) == (self.pseudo_share == 0.0), "data.pseudo_labels",
                "set data.pseudo_labels (a pseudo-label folder) and data.pseudo_share > 0 together")
        require(not self.pseudo_soft or self.pseudo_labels is not None, "data.pseudo_soft",
                "needs data.pseudo_labels (soft targets are a teacher's probabilities on those photos)")
        require(1 <= self.batch_size <= 1024, "data.batch_size", "out of range 1..1024")
        require(0.0 <= self.lesion_crop_fraction <= 1.0, "data.lesion_crop_fraction", "must lie in [0, 1]")
        require(self.val_every >= 2, "data.val_every", "must be at least 2")
        require(bool(self.centre_types) and set(self.centre_types) <= set(OUTPUT_TYPES), "data.centre_types",
                f"{self.centre_types} must name types of {list(OUTPUT_TYPES)}")


@dataclass
class OptimConfig:
    type: Literal["adam", "adamw", "rmsprop"] = "adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 150
    schedule: Literal["cosine", "none"] = "cosine"
    min_lr_frac: float = 0.02
    # Weight averaging: validate and save an exponential moving average of the weights (and
    # BatchNorm statistics) with this decay per step; 0 = off (the saved model is the live one).
    ema: float = 0.0

    def __post_init__(self) -> None:
        require(0 < self.lr < 1, "optim.lr", "must lie in (0, 1)")
        require(len(self.betas) == 2, "optim.betas", "needs two values")
        require(0.0 <= self.ema < 1.0, "optim.ema", "must lie in [0, 1) (0: off)")


@dataclass
class LossConfig:
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    pos_weight: float = 3.0
    dice_over_batch: bool = True
    #: the fuzzy head's term (``model.network.error_head``): BCE of its logit against "the
    #: hemorrhage mask, the network's own probability at ``error_head_threshold``, is wrong here"
    error_head_weight: float = 0.2
    error_head_threshold: float = 0.5
    #: mean-teacher consistency on ``data.unlabelled`` (training/consistency.py): the weight of the
    #: squared difference between the student's probabilities (its crops flipped, rotated and
    #: jittered again) and the teacher's (0: off), reached after ``consistency_rampup`` of the budget;
    #: ``consistency_batch`` unlabelled crops a step; the teacher averages the student's weights
    #: with ``consistency_decay`` per step
    consistency_weight: float = 0.0
    consistency_rampup: float = 0.4
    consistency_batch: int = 4
    consistency_decay: float = 0.99

    def __post_init__(self) -> None:
        require(self.consistency_weight >= 0, "loss.consistency_weight", "must be >= 0 (0: off)")
        require(0 < self.consistency_rampup <= 1, "loss.consistency_rampup", "must lie in (0, 1]")
        require(1 <= self.consistency_batch <= 256, "loss.consistency_batch", "out of range 1..256")
        require(0 < self.consistency_decay < 1, "loss.consistency_decay", "must lie in (0, 1)")


@dataclass
class PatchganConfig:
    ndf: int = 64
    n_layers: int = 3
    spectral_norm: bool = True
    loss: Literal["bce", "lsgan", "hinge"] = "bce"


@dataclass
class SeganCriticConfig:
    ndf: int = 64
    n_layers: int = 3
    weighting: Literal["per_layer_mean", "concat_code"] = "per_layer_mean"
    layout: Literal["journal", "code"] = "journal"
    clamp: float = 0.01
    clamp_bn: bool = True


@dataclass
class AdvOptimConfig:
    type: Literal["adam", "rmsprop"] = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])


@dataclass
class AdversaryConfig:
    """METHODS.md 6.4 ``adversary``: none, PatchGAN (spectral norm), ImageGAN or SegAN critic."""

    type: Literal["none", "patchgan", "imagegan", "segan_critic"] = "none"
    weight: float = 0.5
    patchgan: PatchganConfig = field(default_factory=PatchganConfig)
    segan_critic: SeganCriticConfig = field(default_factory=SeganCriticConfig)
    optimizer: AdvOptimConfig = field(default_factory=AdvOptimConfig)
    d_steps: int = 1

    def __post_init__(self) -> None:
        require(1 <= self.d_steps <= 100, "adversary.d_steps", "out of range 1..100")


@dataclass
class DaleConfig:
    """METHODS.md 2 (our interpretation [A]); fractions of the step budget, intervals in steps."""

    warmup_frac: float = 0.1
    stable_frac: float = 0.2
    partition_every: int = 200
    partition_every_frac: float | None = None  # instead: a pass every this fraction of the budget
    alternate_every: int = 1
    tau_ae: float = 0.5
    tau_er: float = 0.3
    delta: float = 0.2
    hist_momentum: float = 0.5
    omega_beta: float = 0.9
    lambda_align: float = 0.1
    lambda_keep: float = 0.5
    stats_momentum: float = 0.9
    min_pixels: float = 16.0
    # what makes our DALE learn from fuzzy regions instead of erasing lesions (training/README.md)
    stats: Literal["online", "passes"] = "online"  # AE/ER from the training steps' own predictions, or eval passes
    fuzzy_step: Literal["blend", "separate"] = "blend"  # one loss with blended fuzzy targets, or L_f + lambda_keep L_nf
    combine: Literal["and", "or"] = "and"   # fuzzy where AE *and* ER are high ("or": either)
    band_px: int = 3                        # only within this many working px of a lesion border (0: anywhere)
    min_passes: int = 2                     # passes (or, online, observations of a pixel) before F is used
    omega_min: float = 0.5                  # floor of the label confidence
    omega_reference: Literal["expected", "reliable"] = "expected"
    protect_positives: bool = True          # an annotated lesion pixel keeps its label in L_f
    teacher: Literal["ema", "current"] = "ema"
    teacher_decay: float = 0.99

    def __post_init__(self) -> None:
        require(0 <= self.warmup_frac < 1 and 0 <= self.stable_frac < 1 and self.warmup_frac + self.stable_frac < 1,
                "paradigm.dale", "warmup_frac + stable_frac must stay below 1")
        require(self.partition_every >= 1 and self.alternate_every >= 1, "paradigm.dale",
                "partition_every and alternate_every must be >= 1")
        require(0 < self.delta <= 1, "paradigm.dale.delta", "must lie in (0, 1]")
        require(0 <= self.omega_min <= 1, "paradigm.dale.omega_min", "must lie in [0, 1]")
        require(0 <= self.teacher_decay < 1, "paradigm.dale.teacher_decay", "must lie in [0, 1)")
        require(self.partition_every_frac is None or 0 < self.partition_every_frac <= 1,
                "paradigm.dale.partition_every_frac", "must lie in (0, 1]")
        require(self.band_px >= 0 and self.min_passes >= 1, "paradigm.dale",
                "band_px must be >= 0 and min_passes >= 1")


@dataclass
class ParadigmConfig:
    type: Literal["standard", "dale"] = "standard"
    dale: DaleConfig = field(default_factory=DaleConfig)


#: what a run may change (``run.train_only``; training/adapt.py ``trainable``)
TRAIN_ONLY = ("all", "decoder", "early", "norm")


@dataclass
class RunConfig:
    steps: int = 1000
    minutes: float | None = None  # wall-clock budget; stops early when reached
    eval_every: int = 250
    state_every: int = 100  # resume state written this often between validations (0: at validations only)
    log_every: int = 10
    seed: int = 0
    threads: int | None = None
    freeze_encoder: bool = False  # the same as train_only = "decoder" (kept for older configs)
    #: the parameters a (fine-tuning) run changes: all | decoder | early | norm (training/adapt.py)
    train_only: str = "all"
    #: an ensemble's members a run changes (0-based; empty: all); the others keep their weights
    train_members: list[int] = field(default_factory=list)
    freeze_batchnorm: bool = False  # keep every BatchNorm's running statistics (fine-tuning on a few photos)
    #: validate the starting weights as step 0, so that a warm start (a fine-tune) keeps them when
    #: none of its own checkpoints scores better on the validation photos
    validate_start: bool = False
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda | cuda:N | mps
    amp: bool = True  # bf16 autocast of the forward pass on CUDA GPUs and CPUs with native bf16
    #: keep the trained weights (not the weight average) of every validation as a model folder
    #: ``snapshots/step_<N>/``: checkpoints along the run, for training-dynamics maps
    snapshots: bool = False

    def __post_init__(self) -> None:
        require(1 <= self.steps <= 10_000_000, "run.steps", "out of range 1..10000000")
        require(self.minutes is None or (math.isfinite(self.minutes) and self.minutes > 0), "run.minutes",
                f"must be more than 0 minutes (or unset: no time limit), not {self.minutes}")
        require(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"), "run.device",
                f"{self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
        require(self.eval_every >= 1 and self.log_every >= 1, "run", "eval_every/log_every must be >= 1")
        require(self.train_only in TRAIN_ONLY, "run.train_only", f"{self.train_only!r} is not one of {', '.join(TRAIN_ONLY)}")
        require(not (self.freeze_encoder and self.train_only != "all"), "run.freeze_encoder",
                "freeze_encoder is train_only = 'decoder': set one of them")
        require(self.state_every >= 0, "run.state_every", "must be >= 0 (0: write the resume state at validations only)")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    paradigm: ParadigmConfig = field(default_factory=ParadigmConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        """Refuse impossible combinations (METHODS.md 6.3)."""
        net = self.model.network
        if net.dynamic.mode != "off":
            require(self.adversary.type != "none", "model.network.dynamic.mode",
                    f"'{net.dynamic.mode}' adapts the generator from the adversarial loss: it needs an "
                    "adversary (set adversary.type to patchgan, imagegan or segan_critic)")
            require(net.arch == "dynsegnet_unet", "model.network.dynamic.mode",
                    "dynamic adaptation exists only in the dynsegnet_unet generator")
        if net.sgdc.enabled:
            require(net.arch in ("dynsegnet_unet", "segan_segmentor"), "model.network.sgdc.enabled",
                    "SGDC needs a generator with a stride-4 skip and a deep feature "
                    "(dynsegnet_unet or segan_segmentor)")
        if self.paradigm.type == "dale":
            require(self.loss.bce_weight > 0 or self.loss.dice_weight > 0, "paradigm.type",
                    "DALE reweights the supervised loss: it needs bce_weight or dice_weight > 0")
        if len(net.outputs) > 1:
            require(self.paradigm.type == "standard" and self.adversary.type == "none" and not net.sgdc.enabled,
                    "model.network.outputs", "several outputs train with the standard paradigm only (no DALE, "
                    "adversary or SGDC edge loss: each is defined for one lesion map)")
        if self.run.train_members:
            require(net.members > 1 and all(0 <= i < net.members for i in self.run.train_members) and
                    len(set(self.run.train_members)) == len(self.run.train_members), "run.train_members",
                    f"{self.run.train_members}: " + (f"the ensemble's {net.members} members are numbered 0 to "
                                                     f"{net.members - 1}" if net.members > 1 else
                                                     "the network is not an ensemble (model.network.members = 1)"))
        if net.members > 1:
            require(self.paradigm.type == "standard", "model.network.members",
                    "an ensemble trains with the standard paradigm only (DALE aligns one network's features)")
        require(self.loss.bce_weight > 0 or self.loss.dice_weight > 0 or self.adversary.type != "none",
                "loss", "nothing to learn from: no supervised term and no adversary")
        fov = self.model.preprocess.fov_diameter
        require(self.data.crop_size <= fov, "data.crop_size",
                f"{self.data.crop_size} px is larger than the working grid the photos are brought to ({fov} px "
                "across the fundus: model.preprocess.fov_diameter): the crops would be mostly padding")
        require((self.loss.consistency_weight > 0) == (self.data.unlabelled is not None), "loss.consistency_weight",
                "set loss.consistency_weight > 0 and data.unlabelled (a folder of unannotated photos) together")
        if self.loss.consistency_weight > 0:
            require(self.paradigm.type == "standard" and self.adversary.type == "none" and not net.sgdc.enabled
                    and not net.error_head, "loss.consistency_weight",
                    "mean-teacher consistency trains with the standard paradigm only (no DALE, adversary, SGDC "
                    "edge loss or fuzzy head: the unlabelled crops share the labelled crops' forward pass)")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                start: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML config (a name like ``tiny`` means ``training/configs/tiny.toml``; without
    ``path``, ``start``: e.g. a run's saved ``config.json``), apply ``key=value`` overrides
    (values parsed as JSON, else kept as strings), validate."""
    data: dict[str, Any] = dict(start or {})
    if path is not None:
        p = Path(path)
        # a preset's name, unless a file of that name is here (a folder named 'default' is not a config)
        if not p.is_file() and (CONFIG_DIR / f"{path}.toml").exists():
            p = CONFIG_DIR / f"{path}.toml"
        if p.is_dir():
            raise ConfigError(f"{p}: a folder, not a TOML config file (presets: {', '.join(presets())})")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found (presets: {', '.join(presets())})") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{p}: invalid TOML ({err})") from None
        base = data.pop("base", None)
        if base is not None:
            parent = load_config_dict(CONFIG_DIR / f"{base}.toml")
            data = merge(parent, data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        set_dotted(data, key.strip(), _parse_value(value.strip()))
    return from_dict(TrainConfig, data)


def load_config_dict(path: Path) -> dict[str, Any]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    base = data.pop("base", None)
    return merge(load_config_dict(CONFIG_DIR / f"{base}.toml"), data) if base else data


def presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
