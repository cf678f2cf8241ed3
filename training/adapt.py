"""Adapt a model to a new camera from its photos alone (no corrections): BatchNorm statistics
re-estimated on them.

A network trained on one camera normalises each layer's activations with that camera's means
and variances; another camera's colour, brightness, blur and scale move those statistics, and
the layers downstream see inputs they were not trained for. Re-estimating the running means and
variances on the new photos (the weights untouched) is the standard test-time remedy and needs
no label. Crops are taken as in training (256 working px, inside the disc), so the statistics
are those of the crops the network learnt on, not of whole images with their black surround.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from napari_lesionseg.core.models.ensemble import MeanEnsemble

from .data import Prepared
from .train_config import TRAIN_ONLY


def batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``net``."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(net: nn.Module) -> int:
    """Keep every BatchNorm in eval mode from now on (its running mean and variance are used,
    never updated; its scale and shift still learn), whatever ``net.train()`` later says;
    returns how many. A few photos' crops in batches of four otherwise overwrite statistics
    gathered over a whole training set (``run.freeze_batchnorm``)."""
    bns = batchnorms(net)
    for m in bns:
        m.train = (lambda mode=True, _m=m: nn.Module.train(_m, False))  # type: ignore[method-assign]
        nn.Module.train(m, False)
    return len(bns)


# What a fine-tune may change (``run.train_only``; a camera shift is mostly low-level): "all"
# the weights; "decoder" the decoder and head (the encoder frozen); "early" the encoder's first
# two resolution levels only (where colour, blur and noise enter); "norm" the BatchNorm scales
# and shifts only (a few thousand numbers). The parameter names of each architecture's parts:
ENCODER_PREFIXES = ("encoder.", "down.", "e1.", "e2.", "e3.", "e4.")
EARLY_PREFIXES = {
    "unet_small": ("down.0.", "down.1."),
    "dynsegnet_unet": ("encoder.conv1.", "encoder.bn1.", "encoder.layer1."),
    "segan_segmentor": ("e1.", "e2."),
}


def _in_member(name: str) -> str:
    """A parameter's name within its network: an ensemble member's without ``members.<i>.``."""
    return re.sub(r"^members\.\d+\.", "", name)


def trainable(net: nn.Module, which: str, arch: str, members: Sequence[int] = ()) -> set[str]:
    """Names of the parameters of ``net`` (a network of architecture ``arch``) that ``which``
    (one of ``TRAIN_ONLY``) lets an optimiser change, within the ensemble members ``members``
    (indices; empty: every member); the others get ``requires_grad = False``, so no gradient is
    computed for them (a frozen encoder also spares the backward pass through it)."""
    if which not in TRAIN_ONLY:
        raise ValueError(f"train_only must be one of {', '.join(TRAIN_ONLY)}, not {which!r}")
    names = dict(net.named_parameters())
    if members:
        count = len(net.members) if isinstance(net, MeanEnsemble) else 0
        if not all(0 <= i < count for i in members):
            raise ValueError(f"train members {list(members)}: the network has {count or 'no'} ensemble members")
        prefixes = tuple(f"members.{i}." for i in members)
        names = {n: p for n, p in names.items() if n.startswith(prefixes)}
    if which == "all":
        keep = set(names)
    elif which == "decoder":
        keep = {n for n in names if not _in_member(n).startswith(ENCODER_PREFIXES)}
    elif which == "early":
        if arch not in EARLY_PREFIXES:
            raise ValueError(f"train_only 'early' is not defined for the {arch} architecture")
        keep = {n for n in names if _in_member(n).startswith(EARLY_PREFIXES[arch])}
    else:
        keep = {f"{mod_name}.{p}" if mod_name else p for mod_name, m in net.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) for p, _ in m.named_parameters(recurse=False)}
        keep &= set(names)
    for n, p in net.named_parameters():
        p.requires_grad_(n in keep)
    return keep


def _crops(items: Sequence[Prepared], size: int, per_image: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for it in items:
        c, h, w = it.x.shape
        s = min(size, h, w)
        ys, xs = np.nonzero(it.fov)
        for _ in range(per_image):
            j = int(rng.integers(len(ys))) if len(ys) else 0
            cy, cx = (int(ys[j]), int(xs[j])) if len(ys) else (h // 2, w // 2)
            y0 = int(np.clip(cy - s // 2, 0, h - s))
            x0 = int(np.clip(cx - s // 2, 0, w - s))
            out.append(it.x[:, y0:y0 + s, x0:x0 + s])
    return out


def reestimate_batchnorm(net: nn.Module, items: Sequence[Prepared], *, crop: int = 256, crops_per_image: int = 16,
                         batch_size: int = 8, keep: float = 0.0, seed: int = 0) -> int:
    """Replace every BatchNorm's running mean and variance by those of ``items``' crops (a
    cumulative average over all of them), blended as ``keep * old + (1 - keep) * new``;
    returns how many BatchNorm layers changed. The network is left in eval mode; its weights
    are not touched."""
    bns = batchnorms(net)
    if not bns or not items:
        return 0
    old = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    crops = _crops(items, crop, crops_per_image, np.random.default_rng(seed))
    net.eval()
    for m in bns:
        m.train()
    dev = next(net.parameters()).device
    with torch.no_grad():
        for i in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.stack(crops[i:i + batch_size])).to(dev)
            net(x)
    for m, (mean, var, momentum) in zip(bns, old):
        m.running_mean.mul_(1 - keep).add_(mean, alpha=keep)
        m.running_var.mul_(1 - keep).add_(var, alpha=keep)
        m.momentum = momentum
    net.eval()
    return len(bns)
