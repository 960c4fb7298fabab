"""ECA: Efficient Channel Attention (Wang, Wu, Zhu, Li, Zuo and Hu, "ECA-Net: Efficient Channel Attention for
Deep Convolutional Neural Networks", CVPR 2020): gate sigmoid(conv1d_k(avgpool(x))) over channel order."""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from c3exp.errors import check, is_int


def adaptive_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """The paper's psi(C) = |log2(C) / gamma + b / gamma|_odd, ties upwards as the official code."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """k parameters; `kernel_size` None adapts k to C, an odd integer fixes it (released ECA-ResNet-50: 3, 5, 5, 7)."""


    is_attention = True

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, b: float = 1):
        super().__init__()
        check(isinstance(gamma, Real) and not isinstance(gamma, bool) and gamma > 0,
              "attn.options.gamma", gamma, "a positive number (2 in the paper)")
        check(isinstance(b, Real) and not isinstance(b, bool) and math.isfinite(b),
              "attn.options.b", b, "a number (1 in the paper)")
        check(kernel_size is None or (is_int(kernel_size) and kernel_size >= 1 and kernel_size % 2 == 1),
              "attn.options.kernel_size", kernel_size,
              "null (adaptive to the channel count) or an odd positive integer")
        self.kernel_size = adaptive_kernel_size(channels, gamma, b) if kernel_size is None else kernel_size
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (N, C)
        logits = self.conv(pooled[:, None, :])[:, 0]  # channels as the 1D sequence
        return x * torch.sigmoid(logits)[:, :, None, None]

