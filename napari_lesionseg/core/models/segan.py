"""SegAN's segmentor (METHODS.md 4.2, journal version): 4x4 stride-2 encoder, resize-conv
decoder with U-Net skips; optional SGE + SGDC on the stride-4 map (METHODS.md 3.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .network_config import NetworkConfig
from .output import SegOutput, init_prior_bias
from .sgdc import SGDC, SGE


def _down(cin: int, cout: int, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SeganSegmentor(nn.Module):
    """Input ``B x C x H x W`` (H, W multiples of 16) to logits ``B x 1 x H x W``."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        w = cfg.segan_width
        self.e1 = _down(cfg.in_channels, w, bn=False)
        self.e2 = _down(w, 2 * w, bn=True)
        self.e3 = _down(2 * w, 4 * w, bn=True)
        self.e4 = _down(4 * w, 8 * w, bn=True)
        self.d1 = _up(8 * w, 4 * w)
        self.d2 = _up(8 * w, 2 * w)
        self.d3 = _up(4 * w, w)
        self.d4 = nn.Conv2d(2 * w, len(cfg.outputs), 3, 1, 1)
        init_prior_bias(self.d4, cfg.prior)
        self.sge = self.sgdc = None
        if cfg.sgdc.enabled:
            sc = cfg.sgdc
            heads = max(h for h in range(1, sc.heads + 1) if (2 * w) % h == 0)
            self.sge = SGE(8 * w, 2 * w, sc.bottleneck, sc.bottleneck, sc.guide_ch, sc.sobel_mode, sc.refiner_reduction)
            self.sgdc = SGDC(2 * w, sc.guide_ch, heads, sc.kernel, sc.mlp_ratio, sc.ls_init)

    @staticmethod
    def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> SegOutput:
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        e4 = self.e4(e3)
        edge = None
        if self.sge is not None:
            edge, guide = self.sge(e4, e2)
            e2 = self.sgdc(e2, guide)
        h = torch.cat([self.d1(self._resize(e4, e3)), e3], 1)
        h = torch.cat([self.d2(self._resize(h, e2)), e2], 1)
        h = torch.cat([self.d3(self._resize(h, e1)), e1], 1)
        logits = self.d4(self._resize(h, x))
        return SegOutput(logits=logits, features=h, edge_logits=edge)
