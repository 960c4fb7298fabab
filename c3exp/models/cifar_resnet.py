"""CIFAR ResNets (He et al., 2016) and the C3 paper's Wide-ResNet: one block class for every depth."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import nn

from c3exp.models.base import ResNet, classifier_head, init_weights
from c3exp.models.placement import FeatureMaps, attention_at, placement_plan
from c3exp.schema import PositiveInt

Shortcut = Literal["projection", "zero_pad"]
Depth = Annotated[int, at.Ge(8), at.Predicate(lambda d: (d - 2) % 6 == 0), "6k+2: 20, 32, 44, 56, 110, 1202, ..."]
WideDepth = Annotated[int, at.Ge(10), at.Predicate(lambda d: (d - 4) % 6 == 0), "6k+4: 10, 16, 22, 28, 40, ..."]
STEM_CHANNELS = 16
STAGES = ((16, 1), (32, 2), (64, 2))  # channels (times the width), stride
CIFAR_SPATIAL_SIZES = ((16, 16), (16, 16), (8, 8))  # C3's official blocks before each stage (A = 256, 256, 64)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A: subsample, then append zero channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """Identity where the shape is kept; else a 1x1 conv + BN projection (the paper's counts) or option A."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "zero_pad":
        return ZeroPadShortcut(stride, out_channels - in_channels)
    projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    return nn.Sequential(projection, nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Post-activation residual block; attention (if any) after the last BN, before the add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, attention: nn.Module | None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attention = attention if attention is not None else nn.Identity()
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


def cifar_resnet(num_classes: int, attn: Mapping[str, Any] | None = None, *, depth: Depth, width: PositiveInt,
                 shortcut: Shortcut, input_size: int | None = None) -> ResNet:
    """ResNet-`depth` (6k + 2) for 32x32 inputs, widths 16/32/64 x width; the stem keeps 16 channels, as WRNs do."""
    plan = placement_plan(attn, CIFAR_SPATIAL_SIZES)
    stem = nn.Sequential(conv3x3(3, STEM_CHANNELS), nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU(inplace=True))
    stages, in_channels = [], STEM_CHANNELS
    for index, (channels, stride) in enumerate(STAGES):
        entry = plan.at_stage_input(index, in_channels)
        stages.append(nn.Sequential(*([entry] if entry is not None else [])))
        for block in range(depth // 6):
            attention = plan.in_block(index, block, channels * width)
            stages[-1].append(BasicBlock(in_channels, channels * width, stride, shortcut, attention))
            in_channels, stride = channels * width, 1
    tail = plan.after_last_stage(len(stages), in_channels)
    if tail is not None:
        stages[-1].append(tail)
    model = ResNet(stem, stages, classifier_head(in_channels, num_classes))
    if (attn or {}).get("at") is not None:
        attention_at(model, attn, FeatureMaps.measure(model, input_size or 32))
    init_weights(model)
    return model


def wide_resnet(num_classes: int, attn: Mapping[str, Any] | None = None, *, depth: WideDepth, width: PositiveInt,
                shortcut: Shortcut, input_size: int | None = None) -> ResNet:
    """The paper's Wide-ResNet: cifar_resnet(depth - 2), as WRN naming counts the two projection shortcuts as layers."""
    return cifar_resnet(num_classes, attn, depth=depth - 2, width=width, shortcut=shortcut, input_size=input_size)
