"""Adversaries' networks (METHODS.md 1.3, 4.3): PatchGAN with spectral norm, ImageGAN, and
SegAN's multi-scale critic with its L1 loss. All take the image and a one-channel map."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _sn(m: nn.Conv2d, on: bool) -> nn.Module:
    return spectral_norm(m) if on else m


class PatchGAN(nn.Module):
    """pix2pix 70x70 PatchGAN on ``concat[x, m]``: ``n_layers`` stride-2 4x4 convs, one
    stride-1, a 1-channel stride-1 head; LeakyReLU 0.2; spectral norm on every conv; no BN.
    At 512x512 input the output is ``B x 1 x 62 x 62`` patch logits."""

    def __init__(self, in_channels: int = 4, ndf: int = 64, n_layers: int = 3, spectral: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [_sn(nn.Conv2d(in_channels, ndf, 4, 2, 1), spectral), nn.LeakyReLU(0.2, True)]
        c = ndf
        for i in range(1, n_layers):
            nc = ndf * min(2**i, 8)
            layers += [_sn(nn.Conv2d(c, nc, 4, 2, 1), spectral), nn.LeakyReLU(0.2, True)]
            c = nc
        nc = ndf * min(2**n_layers, 8)
        layers += [_sn(nn.Conv2d(c, nc, 4, 1, 1), spectral), nn.LeakyReLU(0.2, True)]
        self.trunk = nn.Sequential(*layers)
        self.head = _sn(nn.Conv2d(nc, 1, 4, 1, 1), spectral)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(torch.cat([x, m], 1)))


class ImageGAN(nn.Module):
    """One logit per image (``B x 1``) with a global view: the PatchGAN trunk, two more
    stride-2 convs, global average pooling and a two-layer MLP on the pooled features (a
    linear head on pooled features would only be the mean of patch logits)."""

    def __init__(self, in_channels: int = 4, ndf: int = 64, n_layers: int = 3, spectral: bool = True) -> None:
        super().__init__()
        self.trunk = PatchGAN(in_channels, ndf, n_layers, spectral).trunk
        nc = ndf * min(2**n_layers, 8)
        self.down = nn.Sequential(
            _sn(nn.Conv2d(nc, nc, 4, 2, 1), spectral), nn.LeakyReLU(0.2, True),
            _sn(nn.Conv2d(nc, nc, 4, 2, 1), spectral), nn.LeakyReLU(0.2, True),
        )
        self.mlp = nn.Sequential(_sn(nn.Linear(nc, nc), spectral), nn.LeakyReLU(0.2, True),
                                 _sn(nn.Linear(nc, 1), spectral))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        h = self.down(self.trunk(torch.cat([x, m], 1)))
        return self.mlp(h.mean(dim=(2, 3)))


# (kernel, width multiplier, batch norm) per block
CRITIC_LAYOUTS = {
    "journal": [(4, 1, False), (4, 2, True), (4, 4, True)],  # SegAN journal: three 4x4 blocks
    "code": [(7, 1, False), (5, 2, True), (4, 4, True), (4, 8, True), (4, 8, True), (3, 8, True)],  # released net.py
}


class SeganCritic(nn.Module):
    """Stride-2 blocks (no BN on the first), LeakyReLU 0.2. ``features(v)`` returns the masked
    image ``v`` and every block's output. ``layout="journal"``: three 4x4 blocks (``n_layers``
    of them); ``"code"``: the released code's six blocks (7, 5, 4, 4, 4, 3; widths 1, 2, 4, 8,
    8, 8 times ``ndf``)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, layout: str = "journal") -> None:
        super().__init__()
        spec = CRITIC_LAYOUTS[layout] if layout == "code" else [
            (4, 2**i, i > 0) for i in range(n_layers)]
        blocks = []
        c = in_channels
        for k, mult, bn in spec:
            nc = ndf * mult
            mods: list[nn.Module] = [nn.Conv2d(c, nc, k, 2, (k - 1) // 2, bias=not bn)]
            if bn:
                mods.append(nn.BatchNorm2d(nc))
            mods.append(nn.LeakyReLU(0.2, True))
            blocks.append(nn.Sequential(*mods))
            c = nc
        self.blocks = nn.ModuleList(blocks)

    def features(self, v: torch.Tensor) -> list[torch.Tensor]:
        out = [v]
        for b in self.blocks:
            out.append(b(out[-1]))
        return out

    def forward(self, v: torch.Tensor) -> list[torch.Tensor]:
        return self.features(v)


def mask_image(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x * m`` with the one-channel map broadcast over every image channel."""
    return x * m


def multiscale_l1(critic: SeganCritic, a: torch.Tensor, b: torch.Tensor,
                  weighting: Literal["per_layer_mean", "concat_code"] = "per_layer_mean") -> torch.Tensor:
    """SegAN's loss between masked images ``a`` and ``b``: the mean absolute difference of
    each critic layer (input included), averaged over layers (``per_layer_mean``), or one mean
    over all layers concatenated with the official code's layer weights (``concat_code``)."""
    fa, fb = critic.features(a), critic.features(b)
    if weighting == "per_layer_mean":
        return torch.stack([(x - y).abs().mean() for x, y in zip(fa, fb)]).mean()
    weights = [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 4.0][: len(fa)]
    flat_a = torch.cat([w * f.flatten(1) for w, f in zip(weights, fa)], 1)
    flat_b = torch.cat([w * f.flatten(1) for w, f in zip(weights, fb)], 1)
    return (flat_a - flat_b).abs().mean()
