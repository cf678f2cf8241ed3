"""Model folders: the unit of a trained model.

```
<folder>/config.json          ModelConfig (network, preprocessing, inference, weights_sha256)
<folder>/weights.safetensors  tensors only: loading never unpickles anything
<folder>/metrics.json         validation figures
<folder>/lineage.json         parent model, data hashes, command, time
```
A folder is written into a hidden temp folder beside the target and moved into place with
one ``os.replace``; an existing folder is never overwritten. Loading treats the folder as
untrusted: only known file names, no symlinks leaving the folder, bounded JSON, a strict
config, the weights' sha256, and every tensor's key and shape are checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .atomic import fsync_dir, make_ordinary
from .configs import ConfigError, from_dict, to_dict
from .errors import LesionsegInputError
from .model_config import ModelConfig
from .models import build_model

CONFIG, WEIGHTS, METRICS, LINEAGE = "config.json", "weights.safetensors", "metrics.json", "lineage.json"
ALLOWED_FILES = {CONFIG, WEIGHTS, METRICS, LINEAGE, "README.md"}
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz", ".tar"}
MAX_JSON_BYTES = 2_000_000
MAX_WEIGHTS_BYTES = 2_000_000_000


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_dict_bytes(net: nn.Module) -> bytes:
    """The network's tensors as safetensors bytes (contiguous CPU copies)."""
    sd = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    return st_save(sd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_model_folder(
    folder: str | os.PathLike[str],
    net: nn.Module,
    config: ModelConfig,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model folder atomically; refuses to replace an existing one unless ``overwrite``."""
    target = Path(folder)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: a model folder already exists there; choose a new name")
    target.parent.mkdir(parents=True, exist_ok=True)
    weights = state_dict_bytes(net)
    cfg = replace(config, weights_sha256=_sha256(weights))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        make_ordinary(tmp, directory=True)
        _write_file(tmp / WEIGHTS, weights)
        _write_file(tmp / CONFIG, json.dumps(to_dict(cfg), indent=2).encode())
        _write_file(tmp / METRICS, json.dumps(metrics or {}, indent=2).encode())
        _write_file(tmp / LINEAGE, json.dumps(lineage or {}, indent=2).encode())
        fsync_dir(tmp)
        if target.exists():  # overwrite: move the old one aside first, then drop it
            old = target.with_name(f".{target.name}.old.tmp")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return target


def _read_json(folder: Path, name: str, required: bool) -> dict[str, Any]:
    p = folder / name
    if not p.exists():
        if required:
            raise LesionsegInputError(folder, f"not a model folder: {name} is missing")
        return {}
    if p.stat().st_size > MAX_JSON_BYTES:
        raise LesionsegInputError(p, f"file is too large for a model folder ({p.stat().st_size} bytes)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LesionsegInputError(p, f"is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise LesionsegInputError(p, "must hold a JSON object")
    return data


def check_folder_files(folder: Path) -> None:
    """Refuse folders holding pickles, unknown files or links that leave the folder."""
    if not folder.exists():
        raise LesionsegInputError(folder, "model folder does not exist")
    if not folder.is_dir():
        raise LesionsegInputError(folder, "is not a folder (a model is a folder with config.json "
                                          "and weights.safetensors)")
    root = folder.resolve()
    for entry in folder.iterdir():
        if entry.is_symlink():
            dest = entry.resolve()
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
    net.load_state_dict(state, strict=True)


def load_model_folder(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a network from a model folder alone, in eval mode, on ``device``."""
    path = Path(folder)
    check_folder_files(path)
    raw = _read_json(path, CONFIG, required=True)
    try:
        cfg = from_dict(ModelConfig, raw)
    except ConfigError as err:
        raise LesionsegInputError(path / CONFIG, f"invalid model config: {err}") from None
    wpath = path / WEIGHTS
    if not wpath.is_file():
        raise LesionsegInputError(path, f"not a model folder: {WEIGHTS} is missing")
    if wpath.stat().st_size > MAX_WEIGHTS_BYTES:
        raise LesionsegInputError(wpath, "weights file is implausibly large")
    data = wpath.read_bytes()
    if cfg.weights_sha256 is None:
        raise LesionsegInputError(path / CONFIG, "weights_sha256 is missing; cannot verify the weights")
    digest = _sha256(data)
    if digest != cfg.weights_sha256:
        raise LesionsegInputError(wpath, f"sha256 {digest[:12]}... does not match the recorded "
                                         f"{cfg.weights_sha256[:12]}...: the weights were changed or damaged")
    try:
        state = st_load(data)
    except Exception as err:  # noqa: BLE001 - any parse failure is a damaged file
        raise LesionsegInputError(wpath, f"is not a valid safetensors file ({err})") from None
    try:
        net = build_model(cfg.network)
    except (ValueError, RuntimeError, MemoryError) as err:
        raise LesionsegInputError(path / CONFIG, f"network cannot be built ({err})") from None
    load_state_checked(net, state, wpath)
    net.eval().to(device)
    return LoadedModel(net, cfg, path, _read_json(path, METRICS, False), _read_json(path, LINEAGE, False))
