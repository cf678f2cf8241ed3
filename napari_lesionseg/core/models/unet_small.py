"""The light CPU U-Net: the shipped default's family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AttentionGate, DoubleConv, ResBlock
from .network_config import NetworkConfig
from .output import SegOutput, init_prior_bias

ERROR_PRIOR = 0.01  # about the share of a disc's pixels a trained mask gets wrong (training/README.md)


class UNetSmall(nn.Module):
    """Plain U-Net: ``len(widths)`` levels, BatchNorm, max-pool down, bilinear up + concat.

    Input ``B x in_channels x H x W`` with H, W multiples of ``2**(levels-1)``; output logits
    ``B x len(outputs) x H x W``. Optional attention gates on the skips and residual blocks.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        w = list(cfg.widths)
        block = (lambda a, b: ResBlock(a, b)) if cfg.residual_decoder else DoubleConv
        self.down = nn.ModuleList([block(cfg.in_channels, w[0])] + [block(w[i - 1], w[i]) for i in range(1, len(w))])
        self.up = nn.ModuleList([block(w[i + 1] + w[i], w[i]) for i in reversed(range(len(w) - 1))])
        #: the skip's channels at each decoder block (its input: the upsampled features, then the skip)
        self.skip_widths = [w[i] for i in reversed(range(len(w) - 1))]
        self.gates = (
            nn.ModuleList([AttentionGate(w[i + 1], w[i]) for i in reversed(range(len(w) - 1))])
            if cfg.attention_gates else None
        )
        self.head = nn.Conv2d(w[0], len(cfg.outputs), 1)
        init_prior_bias(self.head, cfg.prior)
        self.error_head = nn.Conv2d(w[0], 1, 1) if cfg.error_head else None
        if self.error_head is not None:
            init_prior_bias(self.error_head, ERROR_PRIOR)

    def forward(self, x: torch.Tensor) -> SegOutput:
        skips = []
        for i, blk in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = blk(x)
            skips.append(x)
        h = skips.pop()
        for j, blk in enumerate(self.up):
            s = skips.pop()
            if self.gates is not None:
                s = self.gates[j](h, s)
            if getattr(blk, "takes_pair", False):  # an inference copy's (models.fuse.JoinBlock): it upsamples
                h = blk(h, s)                           # and joins the two without a concatenation
            else:
                h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
                h = blk(torch.cat([h, s], dim=1))
        err = self.error_head(h) if self.error_head is not None else None
        return SegOutput(logits=self.head(h), features=h, error_logits=err)
