"""SGE (structural guidance extractor) and SGDC (pooling-free, structure-guided dynamic
convolution), METHODS.md section 3. The released code's bugs are fixed: the Sobel kernels are
buffers (not parameters), an epsilon sits inside the gradient magnitude's square root (no NaN
gradients), and the kernel tensor is reshaped as intended."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SOBEL_X = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]
SOBEL_Y = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]


def _cbr(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``B x C x H x W`` map."""

    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class SobelPrior(nn.Module):
    """Fixed Sobel magnitude modulation ``s' = sigmoid(|grad s|) * s`` followed by a
    bottleneck refiner with a residual connection. ``mode="sum"`` takes the gradient of the
    channel sum (as the released code does: all channels identical), ``"depthwise"`` per
    channel."""

    def __init__(self, c: int, mode: str = "sum", reduction: int = 4) -> None:
        super().__init__()
        self.register_buffer("kx", torch.tensor(SOBEL_X))
        self.register_buffer("ky", torch.tensor(SOBEL_Y))
        self.mode = mode
        r = max(1, c // reduction)
        self.refine = nn.Sequential(
            nn.Conv2d(c, r, 1, bias=False), nn.BatchNorm2d(r), nn.ReLU(inplace=True),
            nn.Conv2d(r, r, 3, padding=1, bias=False), nn.BatchNorm2d(r), nn.ReLU(inplace=True),
            nn.Conv2d(r, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def magnitude(self, s: torch.Tensor) -> torch.Tensor:
        c = s.shape[1]
        if self.mode == "sum":
            src = s.sum(1, keepdim=True)
            gx = F.conv2d(src, self.kx[None, None], padding=1)
            gy = F.conv2d(src, self.ky[None, None], padding=1)
            return torch.sqrt(gx**2 + gy**2 + 1e-6).expand(-1, c, -1, -1)
        kx = self.kx[None, None].expand(c, 1, 3, 3)
        ky = self.ky[None, None].expand(c, 1, 3, 3)
        gx = F.conv2d(s, kx, padding=1, groups=c)
        gy = F.conv2d(s, ky, padding=1, groups=c)
        return torch.sqrt(gx**2 + gy**2 + 1e-6)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        sp = torch.sigmoid(self.magnitude(s)) * s
        return F.relu(self.refine(sp) + sp)


class SGE(nn.Module):
    """Structural guidance from a deep map ``x4`` and a shallow stride-4 map ``x1``:
    returns ``(edge_logits B x 1 x h1 x w1, guidance B x G x h1 x w1)``."""

    def __init__(self, s4_in: int, s1_in: int, bottleneck: int = 256, fused: int = 256, guide_ch: int = 16,
                 sobel_mode: str = "sum", reduction: int = 4) -> None:
        super().__init__()
        self.p4 = _cbr(s4_in, bottleneck)
        self.p1 = _cbr(s1_in, bottleneck)
        self.prior4 = SobelPrior(bottleneck, sobel_mode, reduction)
        self.prior1 = SobelPrior(bottleneck, sobel_mode, reduction)
        self.fuse = _cbr(2 * bottleneck, fused, 3)
        self.edge = nn.Conv2d(fused, 1, 1, bias=False)
        self.guide = nn.Conv2d(fused, guide_ch, 1, bias=False)

    def forward(self, x4: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s4 = self.prior4(self.p4(x4))
        s1 = self.prior1(self.p1(x1))
        s4 = F.interpolate(s4, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        f = self.fuse(torch.cat([s4, s1], 1))
        return self.edge(f), self.guide(f)


class SGDC(nn.Module):
    """Per-pixel dynamic kernels (softmax over ``k*k``, per head) predicted from the feature
    plus guidance, a gated local depthwise branch, and a layer-scaled MLP; shape-preserving
    and near-identity at init (layer scale 1e-6)."""

    def __init__(self, dim: int, guide_ch: int = 16, heads: int = 4, kernel: int = 7, mlp_ratio: float = 4.0,
                 ls_init: float = 1e-6) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"SGDC dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.k = dim, heads, kernel
        self.guide_proj = nn.Conv2d(guide_ch, dim, 1)
        self.weights = nn.Conv2d(dim, 2 * dim + heads * kernel * kernel, 1)
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim)
        self.norm2 = LayerNorm2d(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.gamma1 = nn.Parameter(torch.full((dim,), ls_init))
        self.gamma2 = nn.Parameter(torch.full((dim,), ls_init))

    def kernels(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(a1, a2, K)``; ``K``: B x heads x k*k x H*W, a softmax over the k*k axis."""
        b, c, h, w = x.shape
        g = self.guide_proj(F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False))
        a1, a2, kap = torch.split(self.weights(x + g), [c, c, self.heads * self.k * self.k], dim=1)
        kk = kap.reshape(b, self.heads, self.k * self.k, h * w).softmax(dim=2)
        return a1, a2, kk

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        a1, a2, kk = self.kernels(x, g)
        x_loc = self.local(x * torch.sigmoid(a1))
        u = F.unfold(self.norm1(x), self.k, padding=self.k // 2)  # B x (C*k*k) x HW, k*k fastest
        u = u.reshape(b, self.heads, c // self.heads, self.k * self.k, h * w)
        x_dyn = (u * kk[:, :, None]).sum(3).reshape(b, c, h, w) * torch.sigmoid(a2)
        x = x + self.gamma1[:, None, None] * (x_loc + x_dyn)
        return x + self.gamma2[:, None, None] * self.mlp(self.norm2(x))
