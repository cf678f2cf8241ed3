"""Validation on whole working-grid images (no tiling): pooled AUPR, Dice, best threshold;
for a model with several outputs, the same per output (``val_aupr_<T>`` ...), HE's under the
plain names."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_lesionseg.core.lesion_types import HE
from napari_lesionseg.core.metrics import PooledPR, confusion, scores

from .data import Prepared


@torch.inference_mode()
def predict_work_all(net: nn.Module, x: np.ndarray, stride: int) -> np.ndarray:
    """Probabilities ``(T, h, w)`` of every output for one working-grid input ``(C, h, w)``,
    padded to ``stride``."""
    c, h, w = x.shape
    ph, pw = (-h) % stride, (-w) % stride
    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    dev = next(net.parameters()).device
    t = F.pad(t, (0, pw, 0, ph)).to(dev).contiguous(memory_format=torch.channels_last)
    logits = net(t).logits[0, :, :h, :w]
    return torch.sigmoid(logits.float()).cpu().numpy()


def predict_work(net: nn.Module, x: np.ndarray, stride: int) -> np.ndarray:
    """Hemorrhage probabilities ``(h, w)`` (output 0)."""
    return predict_work_all(net, x, stride)[0]


def _suffix(name: str) -> str:
    return "" if name == HE else f"_{name}"


def validate(net: nn.Module, items: list[Prepared], stride: int, threshold: float = 0.5,
             outputs: list[str] | tuple[str, ...] = (HE,)) -> dict[str, float]:
    """Pooled-pixel AUPR and dataset-level Dice inside the disc (ignore pixels excluded), plus
    the threshold that maximises dataset Dice on this set; per output (an output other than HE
    that no image shows is left out)."""
    was_training = net.training
    net.eval()
    prs = {n: PooledPR(4096) for n in outputs}
    totals: dict[str, np.ndarray] = {}
    positives = dict.fromkeys(outputs, 0)
    for it in items:
        probs = predict_work_all(net, it.x, stride)
        labels = it.labels().reshape((-1,) + it.y.shape)
        for k, name in enumerate(outputs):
            lab = labels[k]
            valid = it.fov & (lab != 255)
            if not valid.any():
                continue
            gt = lab == 1
            positives[name] += int(np.count_nonzero(gt & valid))
            prs[name].add(probs[k], gt, valid)
            c = confusion(probs[k] > threshold, gt, valid)
            totals[name] = c if name not in totals else totals[name] + c
    net.train(was_training)
    out: dict[str, float] = {}
    for name in outputs:
        if name not in totals or (name != HE and not positives[name]):  # nothing to find: no score
            continue
        precision, recall, thr = prs[name].curve()
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        k = int(np.argmax(f1)) if len(f1) else 0
        s, sfx = scores(totals[name]), _suffix(name)
        out.update({f"val_aupr{sfx}": prs[name].aupr(), f"val_dice{sfx}": s["dice"],
                    f"val_best_dice{sfx}": float(f1[k]) if len(f1) else float("nan"),
                    f"val_best_threshold{sfx}": float(thr[k]) if len(thr) else threshold})
    if HE not in totals:
        out.update({"val_aupr": float("nan"), "val_dice": float("nan"), "val_best_dice": float("nan"),
                    "val_best_threshold": threshold})
    return out
