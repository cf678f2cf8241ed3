"""Inference-only copy of a network with every ``Conv2d`` followed by ``BatchNorm2d`` (in the
same ``nn.Sequential``) folded into one convolution: BatchNorm in eval mode is an affine map
per channel, so ``bn(conv(x)) = conv'(x)`` with rescaled weights and a bias. Saves one pass
over every activation (about 9 % of the shipped model's CPU time); results equal within
float rounding. Then, on the CPU through oneDNN post-ops: each conv+ReLU as one operation
(:class:`ConvReLU`), and each U-Net decoder block's join rewritten (:class:`JoinBlock`: no
concatenation, in the precisions of ``JOIN_DTYPES``; in fp32 the upsampling as a transposed
convolution too)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import DoubleConv


def fold_batchnorm(net: nn.Module) -> tuple[nn.Module, int]:
    """A fused deep copy of ``net`` in eval mode and the number of BatchNorms folded. The
    original is untouched (it stays trainable)."""
    fused = copy.deepcopy(net).eval()
    n = 0
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
                n += 1
    return fused, n


class ConvReLU(nn.Module):
    """``relu(conv(x))`` as one oneDNN convolution with a ReLU post-op on the CPU (the ReLU pass
    over every activation disappears: 3-6 % of the shipped model's time with bf16; the output
    is bit-identical), and as the two plain modules anywhere else (CUDA, MPS, float16, a
    PyTorch build without oneDNN)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self._cast: tuple[tuple, torch.Tensor, torch.Tensor | None] | None = None

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, b = self.conv.weight, self.conv.bias
        key = (dtype, w.data_ptr(), w._version, None if b is None else b._version)
        if self._cast is None or self._cast[0] != key:
            cw = w.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            cb = None if b is None else b.detach().to(dtype)
            self._cast = (key, cw, cb)
        return self._cast[1], self._cast[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _onednn_dtype(x, pointwise_works)
        if dtype is None:
            return F.relu(self.conv(x))
        w, b = self._weights(dtype)
        c = self.conv
        return _POINTWISE(x.to(dtype), w, b, list(c.padding), list(c.stride), list(c.dilation), c.groups,
                          "relu", [None], "")


def _cpu_autocast_dtype() -> torch.dtype | None:
    if not torch.is_autocast_enabled("cpu"):
        return None
    return torch.get_autocast_dtype("cpu")


def _onednn_dtype(x: torch.Tensor, works: Callable[[torch.dtype], bool]) -> torch.dtype | None:
    """The dtype a fused oneDNN op would run ``x`` in (CPU autocast's, else ``x``'s own), or None
    where it cannot: off the CPU, in a dtype other than fp32 or bf16, or where ``works`` (the
    op's one-time check) says no in that dtype."""
    dtype = _cpu_autocast_dtype() or x.dtype
    if x.device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or not works(dtype):
        return None
    return dtype


_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
_BINARY = getattr(_POINTWISE, "binary", None)


@functools.cache
def pointwise_works(dtype: torch.dtype = torch.float32) -> bool:
    """The fused op exists in this PyTorch build, runs in ``dtype`` on this CPU and agrees with
    conv + relu on a tiny case (checked once per dtype, on first use). oneDNN's bf16 path needs
    AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT: on an AVX2 CPU bf16 takes the plain pair, which
    PyTorch runs there."""
    if _POINTWISE is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        conv = nn.Conv2d(2, 3, 3, padding=1)
        x = torch.randn(1, 2, 5, 5).contiguous(memory_format=torch.channels_last)
        w = conv.weight.detach().contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):  # may first run under autocast
            got = _POINTWISE(x.to(dtype), w.to(dtype), conv.bias.detach().to(dtype), [1, 1], [1, 1], [1, 1], 1,
                             "relu", [None], "")
            tol = 1e-5 if dtype == torch.float32 else 5e-2
            return bool(torch.allclose(got.float(), F.relu(conv(x)), atol=tol, rtol=tol))
    except (RuntimeError, TypeError):
        return False


def fuse_conv_relu(net: nn.Module) -> int:
    """Replace, in place, every ``Conv2d`` followed by a ReLU in the same ``nn.Sequential`` (with
    at most an ``Identity`` left by :func:`fold_batchnorm` between them) by :class:`ConvReLU`.
    Returns how many were fused."""
    n = 0
    for seq in net.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            j = i + 2 if i + 2 < len(seq) and type(seq[i + 1]) is nn.Identity else i + 1
            if type(seq[i]) is nn.Conv2d and type(seq[j]) is nn.ReLU and seq[i].padding_mode == "zeros":
                seq[i] = ConvReLU(seq[i])
                seq[j] = nn.Identity()
                n += 1
    return n


@functools.cache
def binary_works(dtype: torch.dtype = torch.float32) -> bool:
    """oneDNN's convolution with an added tensor and a ReLU as post-ops,
    ``relu(conv(x) + other)``, exists in this PyTorch build, runs in ``dtype`` on this CPU and
    agrees with the plain ops on a tiny case (checked once per dtype)."""
    if _BINARY is None or not pointwise_works(dtype):
        return False
    try:
        conv = nn.Conv2d(2, 3, 3, padding=1)
        x = torch.randn(1, 2, 5, 5).contiguous(memory_format=torch.channels_last)
        other = torch.randn(1, 3, 5, 5).contiguous(memory_format=torch.channels_last)
        w = conv.weight.detach().contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            got = _BINARY(x.to(dtype), other.to(dtype), w.to(dtype), conv.bias.detach().to(dtype), [1, 1], [1, 1],
                          [1, 1], 1, "add", None, "relu", [], None)
            tol = 1e-5 if dtype == torch.float32 else 5e-2
            return bool(torch.allclose(got.float(), F.relu(conv(x) + other), atol=tol, rtol=tol))
    except (RuntimeError, TypeError):
        return False


# The precisions in which JoinConvReLU takes the concatenation out: where it was measured faster
# (benchmarks/decoder_joins.py: fp32 on an AVX2 CPU, 2026-12-06; bf16 on a Xeon with AMX,
# 2026-12-07, the four bundled networks at 0.90-0.95 of their time, each as far from fp32 as the
# concatenation in bf16). Any other precision (fp16) keeps the concatenation: oneDNN's tiny-case
# check in binary_works says the op runs, not how fast.
JOIN_DTYPES: set[torch.dtype] = {torch.float32, torch.bfloat16}


class JoinConvReLU(nn.Module):
    """``relu(conv(cat([h, s], 1)))`` of a U-Net decoder without the concatenation: the
    convolution split along its input channels, ``relu(conv_h(h) + conv_s(s))``, the sum and the
    ReLU as oneDNN post-ops of the second convolution. The concatenated tensor (48 channels
    at the tile's full size for the shipped networks) is never written: 9-12 % of a network's
    time in fp32 on an AVX2 CPU (benchmarks/README.md). The same arithmetic, summed in another
    order (results within float rounding); the plain concatenation wherever
    :class:`ConvReLU` would take the plain pair, and in precisions not in ``JOIN_DTYPES``."""

    def __init__(self, conv_relu: ConvReLU, h_channels: int) -> None:
        super().__init__()
        c = conv_relu.conv
        if c.groups != 1 or not 0 < h_channels < c.in_channels:
            raise ValueError(f"cannot split a convolution of {c.in_channels} input channels (groups {c.groups}) "
                             f"after {h_channels}")
        self.conv_relu = conv_relu
        self.h_channels = h_channels
        self._cast: tuple[tuple, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        w, b = self.conv_relu.conv.weight, self.conv_relu.conv.bias
        key = (dtype, w.data_ptr(), w._version, None if b is None else b._version)
        if self._cast is None or self._cast[0] != key:
            wh, ws = (part.detach().to(dtype).contiguous(memory_format=torch.channels_last)
                      for part in (w[:, :self.h_channels], w[:, self.h_channels:]))
            self._cast = (key, wh, ws, None if b is None else b.detach().to(dtype))
        return self._cast[1], self._cast[2], self._cast[3]

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        dtype = _onednn_dtype(h, binary_works)
        if dtype is None or dtype not in JOIN_DTYPES:
            return self.conv_relu(torch.cat([h, s], 1))
        wh, ws, b = self._weights(dtype)
        c = self.conv_relu.conv
        geometry = (list(c.padding), list(c.stride), list(c.dilation), 1)
        other = _POINTWISE(s.to(dtype), ws, b, *geometry, "none", [None], "")
        return _BINARY(h.to(dtype), other, wh, None, *geometry, "add", None, "relu", [], None)


def upsample2x(h: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)`` as a depthwise
    transposed convolution (stride 2, the kernel ``[1, 3, 3, 1] / 4`` in each direction) of the
    map with its edge rows and columns repeated once: the same values (within 5e-7), in
    channels_last when ``h`` is, and on a CPU through oneDNN about 40 % faster than PyTorch's
    upsampling kernel for the decoders' large maps (61 -> 37 ms for 32 channels to 704x832,
    fp32, AVX2)."""
    c = h.shape[1]
    k = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=h.dtype, device=h.device)
    kernel = (k[:, None] * k[None, :]).expand(c, 1, 4, 4).contiguous(memory_format=torch.channels_last)
    return F.conv_transpose2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), kernel, stride=2, padding=3, groups=c)


class JoinBlock(nn.Module):
    """A decoder block that takes the decoder's features (before upsampling) and the skip apart
    (``takes_pair``): it upsamples the features itself (:func:`upsample2x` in fp32 on the CPU
    where the skip is exactly twice their size, else PyTorch's upsampling), then its first
    conv+ReLU is a :class:`JoinConvReLU`, then the rest of the block."""

    takes_pair = True

    def __init__(self, first: JoinConvReLU, rest: nn.Module) -> None:
        super().__init__()
        self.first, self.rest = first, rest

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        size = tuple(s.shape[-2:])
        # fp32 only: oneDNN's depthwise transposed convolution in bf16 is 2-14 times slower than
        # PyTorch's upsampling (benchmarks/upsample2x.py, Xeon with AMX; fp32: 0.65-1.11 of its time)
        if size == (2 * h.shape[-2], 2 * h.shape[-1]) and _onednn_dtype(h, binary_works) == torch.float32:
            up = upsample2x(h)
        else:
            up = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
        return self.rest(self.first(up, s))


def fuse_decoder_joins(net: nn.Module) -> int:
    """Replace, in place, each plain decoder block (``DoubleConv``) of every U-Net in ``net``
    (``up`` blocks with ``skip_widths``) whose first layer is a fused :class:`ConvReLU` (run
    :func:`fuse_conv_relu` first) by a :class:`JoinBlock`. Returns how many were replaced."""
    n = 0
    for unet in list(net.modules()):  # listed first: blocks are replaced on the way
        widths = getattr(unet, "skip_widths", None)
        if widths is None:
            continue
        for j, blk in enumerate(unet.up):
            if type(blk) is not DoubleConv:  # a ResBlock's shortcut reads the concatenation too
                continue
            first = blk.body[0]
            if type(first[0]) is not ConvReLU or not all(type(m) is nn.Identity for m in first[1:]):
                continue
            conv = first[0].conv
            if conv.groups != 1 or conv.in_channels <= widths[j]:
                continue
            unet.up[j] = JoinBlock(JoinConvReLU(first[0], conv.in_channels - widths[j]), blk.body[1])
            n += 1
    return n
