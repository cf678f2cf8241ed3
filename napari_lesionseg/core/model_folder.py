"""Model folders: the unit of a trained model.

```
<folder>/config.json          ModelConfig (network, preprocessing, inference, weights_sha256)
<folder>/weights.safetensors  tensors only: loading never unpickles anything
<folder>/metrics.json         validation figures
<folder>/lineage.json         parent model, data hashes, command, time
<folder>/replay/              optional: a few training photos a fine-tune replays (training/replay.py)
```
A folder is written into a hidden temp folder beside the target and moved into place with
one ``os.replace``; an existing folder is never overwritten. Loading treats the folder as
untrusted: only known file names, regular files only (a FIFO cannot hang the loader), no
symlinks leaving the folder, bounded JSON (size, nesting, digits), a strict config that names
no file outside the folder, the config's and the weights' sha256, and every tensor's key and
shape checked against the network built on PyTorch's ``meta`` device (no memory) before the
real network is allocated; networks over ``MAX_PARAMETERS`` are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .atomic import atomic_folder
from .dataclass_io import ConfigError, from_dict, to_dict
from .errors import LesionsegInputError
from .jsonfile import json_text, read_json, read_regular_file
from .model_config import ModelConfig, upgrade_config
from .models import build_model

CONFIG, WEIGHTS, METRICS, LINEAGE = "config.json", "weights.safetensors", "metrics.json", "lineage.json"
ALLOWED_FILES = {CONFIG, WEIGHTS, METRICS, LINEAGE, "README.md", "replay"}
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz", ".tar"}
MAX_JSON_BYTES = 2_000_000
MAX_WEIGHTS_BYTES = 2_000_000_000
MAX_PARAMETERS = 200_000_000  # the paper-size DynSegNet has 44.8 M


@dataclass
class LoadedModel:
    """A network rebuilt from a folder, in eval mode, with what the folder says about it."""

    net: nn.Module
    config: ModelConfig
    path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.config.name

    def with_extra_grids(self, grids: list[int]) -> LoadedModel:
        """The same network run also on ``grids`` (:meth:`ModelConfig.with_extra_grids`)."""
        return replace(self, config=self.config.with_extra_grids(grids))

    @property
    def unseen_photos(self) -> list[str]:
        """Annotated photos this model never trained on: ``metrics.json``'s ``held_out.photos``
        (kept out of a final model's training), else its validation photos unless they were
        training photos too (``val_in_sample``); empty when it names none."""
        held = self.metrics.get("held_out")
        if isinstance(held, dict) and held.get("photos"):
            return list(held["photos"])
        if self.metrics.get("val_in_sample"):
            return []
        return list(self.metrics.get("val_images") or [])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_dict_bytes(net: nn.Module) -> bytes:
    """The network's tensors as safetensors bytes (contiguous CPU copies)."""
    sd = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    return st_save(sd)


def config_digest(cfg: ModelConfig) -> str:
    """sha256 of the config as saved, without its own ``config_sha256`` (it covers the
    weights too, through ``weights_sha256``)."""
    return _raw_digest(to_dict(cfg))


def _raw_digest(raw: dict[str, Any]) -> str:
    """The digest of ``config.json``'s content as read (before any upgrade of old names)."""
    d = {k: v for k, v in raw.items() if k != "config_sha256"}
    return _sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode())


def save_model_folder(
    folder: str | os.PathLike[str],
    net: nn.Module,
    config: ModelConfig,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    fill_more: Callable[[Path], None] | None = None,
) -> Path:
    """Write a model folder atomically; refuses to replace an existing one unless ``overwrite``.
    The folder holds every weight: an encoder's ``weights_path`` (an initialisation for
    training) is not kept. ``fill_more(tmp)`` adds more content (a replay set) before the
    folder is moved into place."""
    target = Path(folder)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: a model folder already exists there; choose a new name")
    weights = state_dict_bytes(net)
    net_cfg = replace(config.network, encoder=replace(config.network.encoder, weights_path=None))
    cfg = replace(config, network=net_cfg, weights_sha256=_sha256(weights), config_sha256=None)
    cfg = replace(cfg, config_sha256=config_digest(cfg))

    def fill(tmp: Path) -> None:
        (tmp / WEIGHTS).write_bytes(weights)
        (tmp / CONFIG).write_text(json.dumps(to_dict(cfg), indent=2), encoding="utf-8")
        (tmp / METRICS).write_text(json_text(metrics or {}, indent=2), encoding="utf-8")
        (tmp / LINEAGE).write_text(json_text(lineage or {}, indent=2), encoding="utf-8")
        if fill_more is not None:
            fill_more(tmp)

    return atomic_folder(target, fill, overwrite=overwrite)


def _read_json(folder: Path, name: str, required: bool) -> dict[str, Any]:
    p = folder / name
    if not required and not os.path.lexists(p):
        return {}
    return read_json(p, max_bytes=MAX_JSON_BYTES, what=name)


def check_folder_files(folder: Path) -> None:
    """Refuse folders holding pickles, unknown files or links that leave the folder."""
    if not folder.exists():
        raise LesionsegInputError(folder, "model folder does not exist")
    if not folder.is_dir():
        raise LesionsegInputError(folder, "is not a folder (a model is a folder with config.json "
                                          "and weights.safetensors)")
    try:
        root = folder.resolve()
        entries = list(folder.iterdir())
    except (OSError, RuntimeError) as err:
        raise LesionsegInputError(folder, f"model folder cannot be read ({err})") from None
    if (folder / "best").is_dir() and (folder / "events.jsonl").exists():
        raise LesionsegInputError(folder, f"is a training run's folder, not a model folder: its model is "
                                          f"{folder / 'best'} (the best checkpoint; {folder / 'last'}: the last)")
    for entry in entries:
        if entry.is_symlink():
            try:
                dest = entry.resolve(strict=True)
            except (OSError, RuntimeError):
                raise LesionsegInputError(entry, "symlink is broken or loops; refused") from None
            if root != dest and root not in dest.parents:
                raise LesionsegInputError(entry, "symlink points outside the model folder; refused")
        if entry.suffix.lower() in PICKLE_SUFFIXES:
            raise LesionsegInputError(
                entry, "model folders may not hold pickle-based files (.pt/.pth/.pkl/...): loading "
                       "them can run arbitrary code; only weights.safetensors is read")
        if entry.name not in ALLOWED_FILES and not entry.name.startswith("."):
            raise LesionsegInputError(entry, f"unexpected file in a model folder (allowed: "
                                             f"{', '.join(sorted(ALLOWED_FILES))})")


def load_state_checked(net: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``net``, naming the first key that is missing, unexpected or misshapen."""
    check_state(net, state, source)
    net.load_state_dict(state, strict=True)


def check_state(net: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Name the first key of ``state`` that is missing, unexpected, misshapen or of another
    dtype than ``net`` (which may live on the ``meta`` device)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise LesionsegInputError(source, f"weights lack key {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise LesionsegInputError(source, f"weights hold unexpected key {unexpected[0]!r} "
                                          f"({len(unexpected)} unexpected)")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise LesionsegInputError(source, f"key {k!r} has shape {tuple(v.shape)}, the network "
                                              f"expects {tuple(own[k].shape)}")
        if v.dtype != own[k].dtype:
            raise LesionsegInputError(source, f"key {k!r} has dtype {v.dtype}, expected {own[k].dtype}")


def _check_config(path: Path, raw: dict[str, Any]) -> ModelConfig:
    try:
        cfg = from_dict(ModelConfig, upgrade_config(raw))
    except ConfigError as err:
        raise LesionsegInputError(path / CONFIG, f"invalid model config: {err}") from None
    if cfg.config_sha256 is not None and cfg.config_sha256 != _raw_digest(raw):
        raise LesionsegInputError(path / CONFIG, "was changed after the model was saved (config_sha256 does not "
                                                 "match): the settings may not be the ones the model was validated "
                                                 "with; restore it, or save a new model folder")
    if cfg.network.encoder.weights_path is not None:
        raise LesionsegInputError(path / CONFIG, "network.encoder.weights_path names a file outside the model "
                                                 "folder; a model folder holds all its weights (set it to null)")
    if cfg.weights_sha256 is None:
        raise LesionsegInputError(path / CONFIG, "weights_sha256 is missing; cannot verify the weights")
    return cfg


def _meta_network(path: Path, cfg: ModelConfig) -> nn.Module:
    """The network built on the ``meta`` device: shapes without memory."""
    try:
        with torch.device("meta"):
            net = build_model(cfg.network)
    except (ValueError, RuntimeError, TypeError) as err:
        raise LesionsegInputError(path / CONFIG, f"network cannot be built ({err})") from None
    n = sum(p.numel() for p in net.parameters())
    if n > MAX_PARAMETERS:
        raise LesionsegInputError(path / CONFIG, f"network would have {n:,} parameters, over the limit of "
                                                 f"{MAX_PARAMETERS:,}; refused before allocating it")
    return net


def load_model_config(folder: str | os.PathLike[str]) -> ModelConfig:
    """A model folder's checked config alone (no weights read): e.g. its threshold for a
    form before anything runs."""
    path = Path(folder)
    check_folder_files(path)
    return _check_config(path, _read_json(path, CONFIG, required=True))


def load_model_folder(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a network from a model folder alone, in eval mode, on ``device``."""
    path = Path(folder)
    cfg = load_model_config(path)
    wpath = path / WEIGHTS
    data = read_regular_file(wpath, MAX_WEIGHTS_BYTES, WEIGHTS)
    digest = _sha256(data)
    if digest != cfg.weights_sha256:
        raise LesionsegInputError(wpath, f"sha256 {digest[:12]}... does not match the recorded "
                                         f"{cfg.weights_sha256[:12]}...: the weights were changed or damaged")
    try:
        state = st_load(data)
    except Exception as err:  # noqa: BLE001 - any parse failure is a damaged file
        raise LesionsegInputError(wpath, f"is not a valid safetensors file ({err})") from None
    check_state(_meta_network(path, cfg), state, wpath)
    try:
        net = build_model(cfg.network)
    except (ValueError, RuntimeError, MemoryError) as err:
        raise LesionsegInputError(path / CONFIG, f"network cannot be built ({err})") from None
    net.load_state_dict(state, strict=True)
    net.eval().to(device)
    return LoadedModel(net, cfg, path, _read_json(path, METRICS, False), _read_json(path, LINEAGE, False))
