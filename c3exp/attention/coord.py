"""Coordinate attention (Hou, Zhou and Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021):
out = x * a_h * a_w, one gate per row and one per column."""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.schema import PositiveInt


class CoordAttention(nn.Module):
    """Biases and BN affine as the official code: 3 * C * M + 3 * M + 2 * C parameters, M the hidden width."""

    is_attention = True

    def __init__(self, channels: int,
                 reduction: Annotated[PositiveInt, "hidden width max(8, channels // reduction); 32 in the paper"]):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.conv = nn.Conv2d(channels, hidden, 1)
        self.bn = nn.BatchNorm2d(hidden)
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        along_width = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        along_height = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        y = F.hardswish(self.bn(self.conv(torch.cat([along_width, along_height], dim=2))))  # (N, M, H + W, 1)
        y_h, y_w = torch.split(y, [height, width], dim=2)
        gate_h = torch.sigmoid(self.conv_h(y_h))  # (N, C, H, 1): one weight per row
        gate_w = torch.sigmoid(self.conv_w(y_w)).transpose(2, 3)  # (N, C, 1, W): one weight per column
        return x * gate_h * gate_w
