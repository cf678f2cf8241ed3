"""Validation on whole working-grid images (no tiling): pooled AUPR, Dice, best threshold."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_lesionseg.core.metrics import PooledPR, confusion, scores

from .data import Prepared


@torch.inference_mode()
def predict_work(net: nn.Module, x: np.ndarray, stride: int) -> np.ndarray:
    """Probabilities ``(h, w)`` for one working-grid input ``(C, h, w)``, padded to ``stride``."""
    c, h, w = x.shape
    ph, pw = (-h) % stride, (-w) % stride
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    dev = next(net.parameters()).device
    t = F.pad(t, (0, pw, 0, ph)).to(dev).contiguous(memory_format=torch.channels_last)
    logits = net(t).logits[0, 0, :h, :w]
    return torch.sigmoid(logits.float()).cpu().numpy()


def validate(net: nn.Module, items: list[Prepared], stride: int, threshold: float = 0.5) -> dict[str, float]:
    """Pooled-pixel AUPR and dataset-level Dice inside the disc (ignore pixels excluded), plus
    the threshold that maximises dataset Dice on this set."""
    was_training = net.training
    net.eval()
    pr = PooledPR(4096)
    total = None
    for it in items:
        p = predict_work(net, it.x, stride)
        valid = it.fov & (it.y != 255)
        gt = it.y == 1
        pr.add(p, gt, valid)
        c = confusion(p > threshold, gt, valid)
        total = c if total is None else total + c
    net.train(was_training)
    precision, recall, thr = pr.curve()
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    k = int(np.argmax(f1)) if len(f1) else 0
    s = scores(total) if total is not None else {"dice": float("nan")}
    return {"val_aupr": pr.aupr(), "val_dice": s["dice"], "val_best_dice": float(f1[k]) if len(f1) else float("nan"),
            "val_best_threshold": float(thr[k]) if len(thr) else threshold}
