"""Adversaries (METHODS.md 1.3, 4.3-4.4): a discriminator or critic with its own optimiser,
judging ``(x, y, p)``: PatchGAN (spectral norm) or ImageGAN with BCE / LSGAN / hinge losses,
or SegAN's critic with the multi-scale L1 loss and weight clamping."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_lesionseg.core.models.discriminators import ImageGAN, PatchGAN, SeganCritic, mask_image, multiscale_l1

from .distributed import average_gradients_, broadcast_module_
from .train_config import AdversaryConfig


def real_map(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Ground truth as a ``B x 1 x H x W`` float map; ignored pixels (255) take the
    prediction's value, so they carry no adversarial signal."""
    t = (y == 1).float()[:, None]
    ignore = (y == 255)[:, None]
    return torch.where(ignore, p.detach(), t)


class Adversary:
    """``d_loss`` / ``g_loss`` / ``after_d_step`` and a ``step_d`` that runs ``d_steps``
    optimiser steps on the discriminator (the generator gets no gradient there)."""

    def __init__(self, cfg: AdversaryConfig, image_channels: int, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        if cfg.type == "segan_critic":
            c = cfg.segan_critic
            self.net: nn.Module = SeganCritic(image_channels, c.ndf, c.n_layers, c.layout)
        else:
            pg = cfg.patchgan
            cls = PatchGAN if cfg.type == "patchgan" else ImageGAN
            self.net = cls(image_channels + 1, pg.ndf, pg.n_layers, pg.spectral_norm)
        self.net.to(device)
        broadcast_module_(self.net)  # under torchrun: one discriminator, the same on every rank
        o = cfg.optimizer
        if o.type == "rmsprop":
            self.opt: torch.optim.Optimizer = torch.optim.RMSprop(self.net.parameters(), lr=o.lr)
        else:
            self.opt = torch.optim.Adam(self.net.parameters(), lr=o.lr, betas=tuple(o.betas))

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.net.load_state_dict(d["net"])
        self.opt.load_state_dict(d["opt"])

    # ---- losses --------------------------------------------------------------------------
    def _gan(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        loss = self.cfg.patchgan.loss
        if loss == "lsgan":
            return ((logits - (1.0 if real else 0.0)) ** 2).mean()
        if loss == "hinge":
            return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    def d_loss(self, x: torch.Tensor, y: torch.Tensor, p_det: torch.Tensor) -> torch.Tensor:
        gt = real_map(y, p_det)
        if self.cfg.type == "segan_critic":
            c = self.cfg.segan_critic
            return -multiscale_l1(self.net, mask_image(x, p_det), mask_image(x, gt), c.weighting)
        return 0.5 * (self._gan(self.net(x, gt), True) + self._gan(self.net(x, p_det), False))

    def g_loss(self, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if self.cfg.type == "segan_critic":
            c = self.cfg.segan_critic
            return multiscale_l1(self.net, mask_image(x, p), mask_image(x, real_map(y, p)), c.weighting)
        logits = self.net(x, p)
        if self.cfg.patchgan.loss == "hinge":
            return -logits.mean()
        return self._gan(logits, True)  # non-saturating

    @torch.no_grad()
    def after_d_step(self) -> None:
        """SegAN: clamp every critic parameter (BatchNorm affine too, unless clamp_bn=false)."""
        if self.cfg.type != "segan_critic":
            return
        c = self.cfg.segan_critic
        for module in self.net.modules():
            if not c.clamp_bn and isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            for prm in module.parameters(recurse=False):
                prm.clamp_(-c.clamp, c.clamp)

    def step_d(self, x: torch.Tensor, y: torch.Tensor, p_det: torch.Tensor) -> float:
        self.net.train()
        loss = torch.zeros(())
        for _ in range(self.cfg.d_steps):
            loss = self.d_loss(x, y, p_det.detach())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients_(self.net)  # DDP does not wrap the discriminator: average by hand
            self.opt.step()
            self.after_d_step()
        return float(loss.detach())

    def freeze(self, frozen: bool) -> None:
        for prm in self.net.parameters():
            prm.requires_grad_(not frozen)


def edge_target(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Morphological gradient of the lesion mask (dilate3x3 - erode3x3): ``B x 1 x H x W``, and
    the map of pixels it is defined at: a pixel whose 3x3 neighbourhood holds an ignored (255)
    pixel has an unknown edge and is left out."""
    m = (y == 1).float()[:, None]
    dil = F.max_pool2d(m, 3, 1, 1)
    ero = -F.max_pool2d(-m, 3, 1, 1)
    known = 1.0 - F.max_pool2d((y == 255).float()[:, None], 3, 1, 1)
    return dil - ero, known


def edge_loss(edge_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE between the SGE edge logits (upsampled to the mask's size) and the edge target, over
    the pixels where the target is known."""
    up = F.interpolate(edge_logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
    target, known = edge_target(y)
    bce = F.binary_cross_entropy_with_logits(up.float(), target, reduction="none")
    return (bce * known).sum() / known.sum().clamp_min(1.0)
