"""An attention block of one's own (docs/extending.md): a learned gate per channel, named by conf/attn/gate.yaml."""
from __future__ import annotations

import torch
from torch import nn


class Gate(nn.Module):
    """x * sigmoid(w_c): one weight per channel, each starting at `init` (0: every gate 1/2)."""

    def __init__(self, channels: int, init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.weight)
