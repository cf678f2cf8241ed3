"""Building blocks of the DynSegNet U-Net (METHODS.md 1.2, 1.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .output import conv_bn_relu


class DynamicGates(nn.Module):
    """Learnable scalar fusion gates ``gamma = 2 * sigmoid(a)`` (1 at init, range (0, 2)).

    The logits ``a`` are updated only by the adversarial gradient (the trainer keeps them out
    of the generator optimiser); with the module disabled every gate is the constant 1.
    """

    def __init__(self, names: list[str], enabled: bool) -> None:
        super().__init__()
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.enabled = enabled
        self.logits = nn.Parameter(torch.zeros(len(self.names))) if enabled and names else None

    def gamma(self, name: str) -> torch.Tensor | float:
        if self.logits is None or name not in self.index:
            return 1.0
        return 2.0 * torch.sigmoid(self.logits[self.index[name]])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3 per rate, and an image-pool branch
    (no BatchNorm there, so batch size 1 trains); concat, 1x1 fuse, dropout 0.1."""

    def __init__(self, cin: int, cout: int, rates: list[int], pool_norm: str = "none",
                 gates: DynamicGates | None = None) -> None:
        super().__init__()
        branches: list[nn.Module] = []
        for r in rates:
            branches.append(conv_bn_relu(cin, cout, 1) if r == 1 else conv_bn_relu(cin, cout, 3, r))
        self.branches = nn.ModuleList(branches)
        pool: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=pool_norm == "none")]  # a norm after it makes a bias redundant
        if pool_norm == "gn":
            pool.append(nn.GroupNorm(min(32, cout), cout))
        pool.append(nn.ReLU(inplace=True))
        self.pool = nn.Sequential(*pool)
        n = len(rates) + 1
        self.project = nn.Sequential(
            nn.Conv2d(n * cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )
        # a bound method, not a submodule: the gate parameter belongs to the generator only once
        self._gamma = gates.gamma if gates is not None else None

    @property
    def n_branches(self) -> int:
        return len(self.branches) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        if self._gamma is not None:
            outs = [o * self._gamma(f"aspp{j}") for j, o in enumerate(outs)]
        return self.project(torch.cat(outs, dim=1))


class AttentionGate(nn.Module):
    """Additive attention gate: ``alpha = sigmoid(psi(relu(Wg up(g) + Wx x)))``, output ``x * alpha``."""

    def __init__(self, g_ch: int, x_ch: int, inter: int | None = None) -> None:
        super().__init__()
        inter = inter or max(x_ch // 4, 8)
        self.w_g = nn.Conv2d(g_ch, inter, 1, bias=False)
        self.w_x = nn.Conv2d(x_ch, inter, 1, bias=True)
        self.psi = nn.Conv2d(inter, 1, 1, bias=True)
        self.last_alpha: torch.Tensor | None = None

    def coefficients(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``alpha``: B x 1 x H_x x W_x in [0, 1]."""
        g = F.interpolate(g, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.psi(F.relu(self.w_g(g) + self.w_x(x))))

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        alpha = self.coefficients(g, x)
        self.last_alpha = alpha.detach()
        return x * alpha


class ResBlock(nn.Module):
    """(3x3 conv-BN-ReLU-3x3 conv-BN) + shortcut (identity or 1x1), ReLU; the residual branch
    is scaled by a dynamic gate when one is given."""

    def __init__(self, cin: int, cout: int, gates: DynamicGates | None = None, gate_name: str = "") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = (
            nn.Identity() if cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )
        self._gamma = gates.gamma if gates is not None else None  # not a submodule (see ASPP)
        self.gate_name = gate_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.body(x)
        if self._gamma is not None:
            r = r * self._gamma(self.gate_name)
        return F.relu(self.shortcut(x) + r)


class DoubleConv(nn.Module):
    """Two 3x3 conv-BN-ReLU (the plain U-Net block)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
