"""What every generator returns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SegOutput:
    """``logits`` B x T x H x W, one channel per ``network.outputs`` (HE first); ``features`` penultimate map B x D x h x w (for DALE);
    ``edge_logits`` B x 1 x H/4 x W/4 from SGE, or None; ``gates`` the dynamic-gate logits
    (1-D parameter), or None; ``error_logits`` B x 1 x H x W from the fuzzy head
    (``network.error_head``: "the hemorrhage mask is wrong here"), or None."""

    logits: torch.Tensor
    features: torch.Tensor | None = None
    edge_logits: torch.Tensor | None = None
    gates: torch.Tensor | None = None
    error_logits: torch.Tensor | None = None


def init_prior_bias(head: nn.Conv2d, prior: float) -> None:
    """Start the output bias at the log-odds of the lesion prior (so the loss starts sane)."""
    if head.bias is not None:
        nn.init.constant_(head.bias, math.log(prior / (1.0 - prior)))


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )

