"""Squeeze-and-Excitation (Hu et al., 2018) as the C3 paper's baseline uses it."""
from __future__ import annotations

import torch
from torch import nn

from c3exp.attention.common import bottleneck_mlp, check_divides
from c3exp.schema import PositiveInt


class SqueezeExcite(nn.Module):
    """Reduction 8 and bias-free FC layers: exactly 2 * C * C / r parameters, what Table 1's "+SE" column adds."""

    is_attention = True

    def __init__(self, channels: int, reduction: PositiveInt):
        super().__init__()
        check_divides(reduction, channels, "channels")
        self.fc = bottleneck_mlp(channels, channels // reduction, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3))))
        return x * gate[:, :, None, None]
