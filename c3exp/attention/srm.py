"""SRM: the style-based recalibration module (Lee, Kim and Nam, "SRM: A Style-based Recalibration Module for
Convolutional Neural Networks", ICCV 2019): gate sigmoid(BN(w_c1 * mean_c + w_c2 * std_c))."""
from __future__ import annotations

import torch
from torch import nn

from c3exp.errors import check


class SRM(nn.Module):
    """4 * C parameters; std unbiased as the official code's (the paper divides by HW): maps need 2 positions."""

    is_attention = True

    def __init__(self, channels: int):
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))  # per channel: (weight of the mean, weight of the std)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        check(height * width >= 2, "attn.name", "srm",
              f"an attention for these maps: SRM's unbiased std needs at least 2 positions and got a {height}x{width} "
              "map (use larger inputs or another attention)")
        std, mean = torch.std_mean(x.flatten(2), dim=2)  # (N, C) each, std unbiased
        style = mean * self.cfc[:, 0] + std * self.cfc[:, 1]
        return x * torch.sigmoid(self.bn(style[:, :, None, None]))
