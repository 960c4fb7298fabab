"""CBAM (Woo et al., ECCV 2018): a channel gate followed by a spatial gate."""
from __future__ import annotations

import torch
from torch import nn

from c3exp.attention.common import check_divides
from c3exp.errors import check


class ChannelGate(nn.Module):
    """Shared MLP (with bias) on the average- and max-pooled descriptors, summed, then a sigmoid."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        check_divides(reduction, channels, "channels")
        hidden = channels // reduction
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(logits)[:, :, None, None]


class SpatialGate(nn.Module):
    """A k x k conv (no bias) + BN on the [max, mean] over channels, then a sigmoid."""

    def __init__(self, kernel_size: int):
        super().__init__()
        check(
            isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1,
            "attn.options.kernel_size",
            kernel_size,
            "an odd positive integer (7 in the paper)",
        )
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Channel then spatial attention, placed like SE (after the block's last BN, before the add)."""

    is_attention = True

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))
