"""Triplet attention (Misra, Nalamada, Arasanipalai and Hou, "Rotate to Attend: Convolutional Triplet
Attention Module", WACV 2021).

Three branches each gate the features with a map over one plane of the (C, H, W) tensor: Z-pool (the
[max, mean] over the remaining axis, 2 channels), a k x k convolution 2 -> 1 without bias, BN, a sigmoid;
the output is the average of the three re-weighted tensors: out = x * (g_cw + g_hc + g_hw) / 3.

The planes follow the official code's rotations (landskape-ai/triplet-attention), so that its weights
would carry over: `cw` pools over H and convolves the (C rows, W columns) plane; `hc` pools over W and
convolves the (H rows, C columns) plane (the official permute(0, 3, 2, 1)); `hw` pools over C and convolves
the (H, W) plane, as CBAM's spatial gate. Instead of rotating the tensor and rotating it back, each branch
pools along its axis and broadcasts its gate back: the same function without copies of x.

Parameters: 3 * (2 k^2 + 2) whatever the channel count (conv weights and the BN affine of each branch);
300 for the paper's k = 7. The BN momentum is the official 0.01.

Channel-permutation equivariance: no. The hw branch is (max and mean over C do not see the order), but the
cw and hc branches convolve along the channel axis, so neighbouring channels interact.
"""
from __future__ import annotations

import torch
from torch import nn

from c3exp.attention.common import PlaneGate, z_pool


def triplet_params(kernel_size: int = 7) -> int:
    """The block's parameter count in closed form, independent of the channel count."""
    return 3 * (2 * kernel_size * kernel_size + 2)


class TripletAttention(nn.Module):
    """The three-branch gate; `channels` only fixes the interface (the weights do not depend on it)."""

    is_attention = True

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__()
        self.cw = PlaneGate(kernel_size, momentum=0.01)
        self.hc = PlaneGate(kernel_size, momentum=0.01)
        self.hw = PlaneGate(kernel_size, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_cw = self.cw(z_pool(x, 2))[:, :, None, :]  # (N, C, W): pooled over H
        gate_hc = self.hc(z_pool(x, 3).transpose(2, 3)).transpose(1, 2)[..., None]  # plane (H, C) -> (N, C, H)
        gate_hw = self.hw(z_pool(x, 1))[:, None]  # (N, H, W): pooled over C
        return x * ((gate_cw + gate_hc + gate_hw) / 3)
