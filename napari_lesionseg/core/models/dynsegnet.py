"""The DynSegNet generator (METHODS.md 1.2, 1.4): ResNet encoder, ASPP on the deepest map,
a U-decoder of attention-gated skips and residual blocks, dynamic fusion gates, and optional
SGDC refinement of the stride-4 skip (METHODS.md 3.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ASPP, AttentionGate, DoubleConv, DynamicGates, ResBlock
from .network_config import NetworkConfig
from .output import SegOutput, conv_bn_relu, init_prior_bias
from .resnet import ResNetEncoder
from .sgdc import SGDC, SGE


def gate_names(cfg: NetworkConfig) -> list[str]:
    """The dynamic gates this config gets: ``skip0-3``, ``res0-3``, ``aspp0..n``."""
    if cfg.dynamic.mode != "gates":
        return []
    names: list[str] = []
    if "skip" in cfg.dynamic.targets:
        names += [f"skip{k}" for k in range(4)]
    if "res" in cfg.dynamic.targets and cfg.residual_decoder:
        names += [f"res{k}" for k in range(4)]
    if "aspp" in cfg.dynamic.targets and cfg.aspp.enabled:
        names += [f"aspp{j}" for j in range(len(cfg.aspp.rates) + 1)]
    return names


class DynSegNet(nn.Module):
    """Input ``B x in_channels x H x W`` (H, W multiples of 32) to logits ``B x 1 x H x W``."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ResNetEncoder(cfg.encoder, cfg.in_channels)
        ch = self.encoder.channels
        self.dyn = DynamicGates(gate_names(cfg), enabled=cfg.dynamic.mode == "gates")
        a = cfg.aspp.channels
        self.aspp = (ASPP(ch[4], a, cfg.aspp.rates, cfg.aspp.pool_norm, self.dyn) if cfg.aspp.enabled
                     else conv_bn_relu(ch[4], a, 1))
        skips = [ch[3], ch[2], ch[1], ch[0]]
        dec = cfg.decoder_channels
        h = a
        self.gates = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for k, s in enumerate(skips):
            self.gates.append(AttentionGate(h, s) if cfg.attention_gates else nn.Identity())
            self.blocks.append(ResBlock(h + s, dec[k], self.dyn, f"res{k}") if cfg.residual_decoder
                               else DoubleConv(h + s, dec[k]))
            h = dec[k]
        self.head = nn.Conv2d(h, len(cfg.outputs), 1)
        init_prior_bias(self.head, cfg.prior)
        self.sge = self.sgdc = self.sgdc8 = None
        if cfg.sgdc.enabled:
            sc = cfg.sgdc
            self.sge = SGE(ch[4], ch[1], sc.bottleneck, sc.bottleneck, sc.guide_ch, sc.sobel_mode, sc.refiner_reduction)
            self.sgdc = SGDC(ch[1], sc.guide_ch, _heads(ch[1], sc.heads), sc.kernel, sc.mlp_ratio, sc.ls_init)
            if "s8" in sc.positions:
                self.sgdc8 = SGDC(ch[2], sc.guide_ch, _heads(ch[2], sc.heads), sc.kernel, sc.mlp_ratio, sc.ls_init)

    @property
    def gate_logits(self) -> nn.Parameter | None:
        return self.dyn.logits

    def forward(self, x: torch.Tensor) -> SegOutput:
        size = x.shape[-2:]
        f0, f1, f2, f3, f4 = self.encoder(x)
        edge = None
        if self.sge is not None:
            edge, guide = self.sge(f4, f1)
            f1 = self.sgdc(f1, guide)
            if self.sgdc8 is not None:
                f2 = self.sgdc8(f2, guide)
        h = self.aspp(f4)
        for k, s in enumerate([f3, f2, f1, f0]):
            gate = self.gates[k]
            s = gate(h, s) if isinstance(gate, AttentionGate) else s
            s = s * self.dyn.gamma(f"skip{k}")
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = self.blocks[k](torch.cat([h, s], 1))
        logits = F.interpolate(self.head(h), size=size, mode="bilinear", align_corners=False)
        return SegOutput(logits=logits, features=h, edge_logits=edge, gates=self.dyn.logits)


def _heads(dim: int, heads: int) -> int:
    """The largest head count <= ``heads`` that divides ``dim``."""
    for h in range(min(heads, dim), 0, -1):
        if dim % h == 0:
            return h
    return 1
