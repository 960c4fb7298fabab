"""Pieces shared by the attention blocks: option checks, SE's, CBAM's and C3's MLP, CBAM's and Triplet's plane gate."""
from __future__ import annotations

import torch
from torch import nn

from c3exp.errors import check


def check_divides(reduction: int, size: int, what: str) -> None:
    """Reject a reduction that would leave a fractional hidden width (the paper's counts assume none)."""
    divisors = [d for d in range(1, min(size, 32) + 1) if size % d == 0]
    allowed = f"a divisor of the block's {what} = {size}, such as {', '.join(map(str, divisors))}"
    check(size % reduction == 0, "attn.options.reduction", reduction, allowed)


def bottleneck_mlp(width: int, hidden: int, bias: bool = True) -> nn.Sequential:
    """width -> hidden -> width with a ReLU between: SE's and CBAM's over the channels, C3's over the positions."""
    relu = nn.ReLU(inplace=True)
    return nn.Sequential(nn.Linear(width, hidden, bias=bias), relu, nn.Linear(hidden, width, bias=bias))


def z_pool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[max, mean] over `dim` of a (N, C, H, W) tensor, stacked as 2 channels after the batch axis."""
    return torch.stack([x.amax(dim=dim), x.mean(dim=dim)], dim=1)


class PlaneGate(nn.Module):
    """sigmoid(BN(conv_k x k([max, mean]))): (N, 2, P, Q) -> (N, P, Q), CBAM's and Triplet's plane gate."""

    def __init__(self, kernel_size: int, momentum: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=momentum)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn(self.conv(pooled)))[:, 0]
