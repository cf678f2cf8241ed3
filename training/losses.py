"""Supervised losses. Shapes: ``logits (B, 1, H, W)``, ``target (B, H, W)`` uint8 with
0 = background, 1 = lesion, 255 = ignore (excluded from every term); for a model with several
outputs ``logits (B, T, H, W)`` and ``target (B, T, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .train_config import LossConfig


def soft_dice(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, over_batch: bool,
              eps: float = 1.0) -> torch.Tensor:
    """Soft Dice in [0, 1]; over the whole batch (one ratio) or per image then averaged."""
    p = prob * valid
    t = target * valid
    dims = (0, 1, 2) if over_batch else (1, 2)
    inter = (p * t).sum(dims)
    den = p.sum(dims) + t.sum(dims)
    return ((2 * inter + eps) / (den + eps)).mean()


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig,
                    weight: torch.Tensor | None = None, soft_target: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """``bce_weight * BCE(pos_weight) + dice_weight * (1 - soft Dice)`` over valid pixels,
    each pixel weighted by ``weight (B, H, W)`` when given (DALE's reliable or fuzzy weights).
    ``soft_target (B, H, W)`` in [0, 1] replaces ``target == 1`` as the target (DALE's
    label-confidence blend); ``target`` still says which pixels are ignored."""
    z = logits[:, 0].float()
    valid = (target != 255).float()
    if weight is not None:
        valid = valid * weight
    t = (target == 1).float() if soft_target is None else soft_target.float()
    logs: dict[str, float] = {}
    loss = z.new_zeros(())
    if cfg.bce_weight:
        pw = torch.tensor(cfg.pos_weight, dtype=z.dtype)
        bce = F.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="none")
        bce = (bce * valid).sum() / valid.sum().clamp_min(1.0)
        loss = loss + cfg.bce_weight * bce
        logs["bce"] = float(bce.detach())
    if cfg.dice_weight:
        dice = soft_dice(torch.sigmoid(z), t, valid, cfg.dice_over_batch)
        loss = loss + cfg.dice_weight * (1.0 - dice)
        logs["soft_dice"] = float(dice.detach())
    return loss, logs


def error_head_loss(error_logits: torch.Tensor, he_logits: torch.Tensor, target: torch.Tensor,
                    threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The fuzzy head's loss and its target: BCE of ``error_logits (B, 1, H, W)`` against
    ``1[(sigmoid(he_logits) > threshold) != (target == 1)]``, the pixels where this step's own
    hemorrhage mask is wrong, over the valid pixels (``target != 255``). The mask is taken from
    the detached logits: the head learns where the network errs, the network is not pushed to
    err where the head expects it."""
    z = error_logits[:, 0].float()
    valid = (target != 255).float()
    with torch.no_grad():
        wrong = ((torch.sigmoid(he_logits.detach().float()) > threshold) != (target == 1)).float() * valid
    bce = F.binary_cross_entropy_with_logits(z, wrong, reduction="none")
    return (bce * valid).sum() / valid.sum().clamp_min(1.0), wrong


def multi_output_loss(logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig, outputs: list[str]
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """The sum over outputs of :func:`supervised_loss` on each channel (each with its own
    ignored pixels: a type unknown in a crop adds nothing). Logs HE's terms under the HE-only
    names and every other output's soft Dice as ``soft_dice_<T>``."""
    total = logits.new_zeros((), dtype=torch.float32)
    logs: dict[str, float] = {}
    for t, name in enumerate(outputs):
        loss, lg = supervised_loss(logits[:, t:t + 1], target[:, t], cfg)
        total = total + loss
        if t == 0:
            logs.update(lg)
        elif "soft_dice" in lg:
            logs[f"soft_dice_{name}"] = lg["soft_dice"]
    return total, logs
