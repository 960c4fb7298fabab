"""CBAM (Woo et al., ECCV 2018): a channel gate followed by a spatial gate."""
from __future__ import annotations

import torch
from torch import nn

from c3exp.attention.common import PlaneGate, bottleneck_mlp, check_divides, z_pool
from c3exp.schema import OddPositiveInt, PositiveInt


class ChannelGate(nn.Module):
    """Shared MLP (with bias) on the average- and max-pooled descriptors, summed, then a sigmoid."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        check_divides(reduction, channels, "channels")
        self.mlp = bottleneck_mlp(channels, channels // reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # both descriptors through the MLP in one call, not two: fewer kernel launches, which bound a small GPU step
        logits = self.mlp(torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))])).sum(0)
        return x * torch.sigmoid(logits)[:, :, None, None]


class CBAM(nn.Module):
    """Channel then spatial attention, placed like SE (after the block's last BN, before the add)."""

    is_attention = True

    def __init__(self, channels: int, reduction: PositiveInt, kernel_size: OddPositiveInt):
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = PlaneGate(kernel_size)  # a k x k conv (no bias) + BN on the [max, mean] over channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.channel_gate(x)
        return gated * self.spatial_gate(z_pool(gated, 1))[:, None]
