"""GC: the global context block (Cao, Xu, Lin, Wei and Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019): out = x + T(sum_j softmax_j(W_k x_j) x_j)."""
from __future__ import annotations

from typing import Annotated

import annotated_types as at
import torch
from torch import nn

Ratio = Annotated[float, at.Interval(gt=0, le=1), "the hidden width is max(1, int(channels * ratio)); 1/16 in the paper"]


class GlobalContext(nn.Module):
    """P = max(1, int(C * ratio)); 2 * C * P + 2 * C + 3 * P + 1 parameters (the inert mask bias kept, as official).
    1x1 convs as nn.Linear: the model-wide Conv2d init then leaves the official one (identity start) in place."""

    is_attention = True

    def __init__(self, channels: int, ratio: Ratio):
        super().__init__()
        hidden = max(1, int(channels * ratio))
        self.mask = nn.Linear(channels, 1)  # W_k: one attention logit per position
        self.transform = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: Kaiming-normal (fan_in) mask with zero bias, zero last transform layer."""
        nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.mask.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x.flatten(2)  # (N, C, HW)
        weights = torch.softmax(self.mask(features.transpose(1, 2)), dim=1)  # (N, HW, 1): softmax over positions
        context = torch.bmm(features, weights)[:, :, 0]  # (N, C)
        return x + self.transform(context)[:, :, None, None]
