"""Triplet attention (Misra, Nalamada, Arasanipalai and Hou, "Rotate to Attend: Convolutional Triplet
Attention Module", WACV 2021): out = x * (g_cw + g_hc + g_hw) / 3, one Z-pool gate per plane.
Planes as the official code's rotations, so its weights carry over; gates broadcast back instead of copies of x."""
from __future__ import annotations

import torch
from torch import nn

from c3exp.attention.common import PlaneGate, z_pool
from c3exp.schema import OddPositiveInt


class TripletAttention(nn.Module):
    """`channels` only fixes the interface: the weights do not depend on it (BN momentum the official 0.01)."""

    is_attention = True

    def __init__(self, channels: int, kernel_size: OddPositiveInt):
        super().__init__()
        self.cw = PlaneGate(kernel_size, momentum=0.01)
        self.hc = PlaneGate(kernel_size, momentum=0.01)
        self.hw = PlaneGate(kernel_size, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_cw = self.cw(z_pool(x, 2))[:, :, None, :]  # (N, C, W): pooled over H
        gate_hc = self.hc(z_pool(x, 3).transpose(2, 3)).transpose(1, 2)[..., None]  # plane (H, C) -> (N, C, H)
        gate_hw = self.hw(z_pool(x, 1))[:, None]  # (N, H, W): pooled over C
        return x * ((gate_cw + gate_hc + gate_hw) / 3)
