"""SRM: the style-based recalibration module (Lee, Kim and Nam, "SRM: A Style-based Recalibration Module for
Convolutional Neural Networks", ICCV 2019).

Computes a channel gate sigmoid(BN(w_c1 * mean_c + w_c2 * std_c)) from each channel's own style statistics
(mean and standard deviation over positions), with two weights per channel and no mixing between channels.
"""
from __future__ import annotations

import torch
from torch import nn

from c3exp.errors import check


class SRM(nn.Module):
    """Style pooling (per-channel mean and std over the H x W positions), channel-wise fully connected layer (each
    channel's 2 statistics -> 1 value, no bias), BatchNorm over the batch, sigmoid gate.

    The std is the unbiased one (Bessel's correction, divisor HW - 1), as the official code's `Tensor.std()`; the
    paper's equation divides by HW. So a map needs at least 2 positions. Parameters: 2 * C (the channel-wise
    layer, zero-initialised as in the official code) + 2 * C (BN affine) = 4 * C.
    """

    is_attention = True

    def __init__(self, channels: int):
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))  # per channel: (weight of the mean, weight of the std)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        check(
            height * width >= 2,
            "attn.name",
            "srm",
            f"an attention for these maps: SRM's unbiased std needs at least 2 positions and got a {height}x{width} map "
            "(use larger inputs or another attention)",
        )
        std, mean = torch.std_mean(x.flatten(2), dim=2)  # (N, C) each, std unbiased
        style = mean * self.cfc[:, 0] + std * self.cfc[:, 1]
        return x * torch.sigmoid(self.bn(style[:, :, None, None]))
