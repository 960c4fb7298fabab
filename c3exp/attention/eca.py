"""ECA: Efficient Channel Attention (Wang, Wu, Zhu, Li, Zuo and Hu, "ECA-Net: Efficient Channel Attention for
Deep Convolutional Neural Networks", CVPR 2020): gate sigmoid(conv1d_k(avgpool(x))) over channel order."""
from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from c3exp.schema import OddPositiveInt, PositiveFloat


def adaptive_kernel_size(channels: int, gamma: float, b: float) -> int:
    """The paper's psi(C) = |log2(C) / gamma + b / gamma|_odd, ties upwards as the official code."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """k parameters; `kernel_size` None adapts k to C, an odd integer fixes it (released ECA-ResNet-50: 3, 5, 5, 7)."""

    is_attention = True

    def __init__(self, channels: int,
                 kernel_size: Annotated[OddPositiveInt | None, "null: adapted to the channel count"],
                 gamma: Annotated[PositiveFloat, "2 in the paper"], b: Annotated[float, "1 in the paper"]):
        super().__init__()
        self.kernel_size = adaptive_kernel_size(channels, gamma, b) if kernel_size is None else kernel_size
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (N, C)
        logits = self.conv(pooled[:, None, :])[:, 0]  # channels as the 1D sequence
        return x * torch.sigmoid(logits)[:, :, None, None]
