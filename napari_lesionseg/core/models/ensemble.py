"""Several networks of one architecture as one model: the mean of their probabilities.

Two fold-validated networks trained by different recipes, each run once, segment photos they
never saw better than one of them run twice (flipped): out of fold over 53 photos, pooled
hemorrhage AUPR 0.565 against 0.554 at the same cost (training/README.md "Two networks averaged").
Inference runs each member as a view of its own (:func:`members`), so the members run side by
side as TTA views do; ``forward`` gives the same mean for training and validation.
"""

from __future__ import annotations

import torch
from torch import nn

from .output import SegOutput

EPS = 1e-6


def mean_logit(logits: list[torch.Tensor]) -> torch.Tensor:
    """The logit of the mean of ``sigmoid(logits)`` (float32; clamped away from 0 and 1 so that a
    unanimous member pair stays finite)."""
    p = torch.stack([torch.sigmoid(t.float()) for t in logits]).mean(0).clamp(EPS, 1 - EPS)
    return torch.logit(p)


class MeanEnsemble(nn.Module):
    """``members`` networks (``network.members``); their outputs' probabilities averaged."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> SegOutput:
        outs = [m(x) for m in self.members]
        errs = [o.error_logits for o in outs]
        return SegOutput(logits=mean_logit([o.logits for o in outs]),
                         error_logits=None if any(e is None for e in errs) else mean_logit(errs))


def members(net: nn.Module) -> list[nn.Module]:
    """The networks whose probabilities a model averages: an ensemble's members, else ``[net]``."""
    return list(net.members) if isinstance(net, MeanEnsemble) else [net]
