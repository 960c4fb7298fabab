"""SimAM (Yang, Zhang, Li and Xie, "SimAM: A Simple, Parameter-Free Attention Module for Convolutional
Neural Networks", ICML 2021): out = x * sigmoid(d / (4 (v + lambda)) + 0.5), d = (x - mean)^2, v = sum(d) / n.
n = max(H*W - 1, 1): on a 1 x 1 map the official code divides 0 by 0; this gives the limit instead of NaNs."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from c3exp.schema import PositiveFloat


class SimAM(nn.Module):
    """The parameter-free energy gate; `channels` only fixes the interface."""

    is_attention = True

    def __init__(self, channels: int, e_lambda: Annotated[PositiveFloat, "1e-4 in the paper"]):
        super().__init__()
        self.e_lambda = float(e_lambda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean(dim=(2, 3), keepdim=True)).square()
        inverse_energy = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(inverse_energy)
