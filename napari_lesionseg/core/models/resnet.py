"""ResNet-18/34/50 encoder written in-house, with torchvision's parameter names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...), so a user's local
ImageNet state-dict file loads key by key. Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .network_config import EncoderConfig

STANDARD_BLOCKS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    """The projection shortcut of a residual block (None: identity)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's V1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNetEncoder(nn.Module):
    """Returns five maps ``[f0 (stride 2), f1 (4), f2 (8), f3 (16), f4 (32, or 16 with
    output_stride=16 via dilation)]``; ``channels`` lists their widths."""

    def __init__(self, cfg: EncoderConfig, in_channels: int = 3) -> None:
        super().__init__()
        block = Bottleneck if cfg.type == "resnet50" else BasicBlock
        blocks = cfg.blocks or STANDARD_BLOCKS[cfg.type]
        w = cfg.width
        self.conv1 = nn.Conv2d(in_channels, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = w
        layers = []
        for i, n in enumerate(blocks):
            width = w * 2**i
            stride, dilation = (1, 1) if i == 0 else (2, 1)
            if i == 3 and cfg.output_stride == 16:
                stride, dilation = 1, 2
            mods = [block(cin, width, stride, dilation)]
            cin = width * block.expansion
            mods += [block(cin, width, 1, dilation) for _ in range(n - 1)]
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.channels = [w] + [w * 2**i * block.expansion for i in range(4)]
        if cfg.weights_path:
            load_encoder_weights(self, cfg.weights_path)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


def load_encoder_weights(enc: ResNetEncoder, path: str | Path) -> list[str]:
    """Load a local torchvision-style state dict (``.safetensors``, or ``.pth`` read with
    ``weights_only=True``) key by key. ``fc.*`` is skipped; a first conv with other input
    channels is adapted (RGB filters kept, extra channels get their mean). Returns the keys
    loaded; raises ValueError naming a key whose shape does not fit."""
    from ..errors import LesionsegInputError

    p = Path(path)
    if not p.is_file():
        raise LesionsegInputError(p, "encoder weights file not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = enc.state_dict()
    loaded = []
    new = {}
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        if k not in own:
            raise LesionsegInputError(p, f"key {k!r} is not a parameter of the {type(enc).__name__}")
        if k == "conv1.weight" and v.shape[1] != own[k].shape[1] and v.shape[0] == own[k].shape[0]:
            extra = own[k].shape[1] - v.shape[1]
            v = torch.cat([v[:, : own[k].shape[1]]] + ([v.mean(1, keepdim=True).repeat(1, extra, 1, 1)] if extra > 0 else []), 1)
        if tuple(v.shape) != tuple(own[k].shape):
            raise LesionsegInputError(p, f"key {k!r} has shape {tuple(v.shape)}, the encoder expects {tuple(own[k].shape)}")
        new[k] = v
        loaded.append(k)
    missing = [k for k in own if k not in new and not k.endswith("num_batches_tracked")]
    if missing:
        raise LesionsegInputError(p, f"weights lack key {missing[0]!r}")
    enc.load_state_dict(new, strict=False)
    return loaded
