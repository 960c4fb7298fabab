"""Non-local block, embedded Gaussian (Wang, Girshick, Gupta and He, "Non-local Neural Networks", CVPR 2018).

Every position attends to every position: with 1 x 1 convolutions theta, phi, g: C -> C/r,
f = softmax_j(theta(x)_i . phi(x)_j), y_i = sum_j f_ij g(x)_j, and out = x + BN(W y), W a 1 x 1
convolution C/r -> C. (The module is named nonlocal_block because `nonlocal` is a Python keyword; the
config name is `nonlocal`.)

As in the paper and its official Caffe2 code (facebookresearch/video-nonlocal-net): the convolutions have
biases and start from N(0, 0.01) weights and zero biases, and the BN's scale starts at zero, so the block
starts as the identity. `sub_sample: true` is the paper's subsampling trick, a 2 x 2 max pooling (stride 2;
an odd last row or column is a window of its own) after phi and g; the official code pools x before those
two convolutions instead. `scale: true` divides theta . phi by sqrt(C/r) before the softmax, as the
official code does by default (NONLOCAL.USE_SCALE); the paper's equations have no scale, hence the default
false.

Parameters: 4 C (C/r) + 3 (C/r) + 3 C (theta, phi, g and W with their biases, the BN affine);
2 C^2 + 4.5 C at the paper's r = 2. Subsampling and scaling add none.

The block is residual (it returns x + W y), so it goes between residual blocks (placement stage_input),
as the paper inserts it, rather than inside them.

Channel-permutation equivariance: no (theta, phi, g and W mix the channels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.attention.common import check_divides
from c3exp.errors import check


def nonlocal_params(channels: int, reduction: int = 2) -> int:
    """The block's parameter count in closed form."""
    inner = channels // reduction
    return 4 * channels * inner + 3 * inner + 3 * channels




class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block over the H*W positions of each sample."""

    is_attention = True

    def __init__(self, channels: int, reduction: int = 2, sub_sample: bool = False, scale: bool = False):
        super().__init__()
        check_divides(reduction, channels, "channels")
        check(isinstance(sub_sample, bool), "attn.options.sub_sample", sub_sample, "true or false")
        check(isinstance(scale, bool), "attn.options.scale", scale, "true or false")
        inner = channels // reduction
        self.sub_sample = sub_sample
        self.scale = scale
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: N(0, 0.01) embeddings with zero bias, and a zero BN scale (the block starts as the identity)."""
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        phi, g = self.phi(x), self.g(x)
        if self.sub_sample:
            phi, g = F.max_pool2d(phi, 2, ceil_mode=True), F.max_pool2d(g, 2, ceil_mode=True)
        theta = self.theta(x).flatten(2)  # (N, C', HW)
        phi, g = phi.flatten(2), g.flatten(2)  # (N, C', HW')
        affinity = theta.transpose(1, 2) @ phi  # (N, HW, HW')
        if self.scale:
            affinity = affinity * theta.shape[1] ** -0.5
        y = g @ affinity.softmax(dim=-1).transpose(1, 2)  # (N, C', HW): y_i = sum_j f_ij g_j
        return x + self.bn(self.out(y.reshape(batch, -1, height, width)))
