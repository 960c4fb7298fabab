"""Non-local block, embedded Gaussian (Wang, Girshick, Gupta and He, "Non-local Neural Networks", CVPR 2018):
out = x + BN(W y), y_i = sum_j softmax_j(theta_i . phi_j) g_j; residual, so placed between blocks (stage_input).
`scale` is the official code's NONLOCAL.USE_SCALE, off as in the paper's equations; `nonlocal` is a keyword."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.attention.common import check_divides
from c3exp.schema import PositiveInt


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block over the H*W positions of each sample."""

    is_attention = True

    def __init__(self, channels: int, reduction: PositiveInt, sub_sample: bool, scale: bool):
        super().__init__()
        check_divides(reduction, channels, "channels")
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
        """The official initialisation: N(0, 0.01) convs, zero biases and BN scale: the block starts as identity."""
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
