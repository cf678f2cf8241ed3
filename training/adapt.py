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

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .data import Prepared


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
