"""Gather-Excite (Hu, Shen, Albanie, Sun and Vedaldi, "Gather-Excite: Exploiting Feature Context in
Convolutional Neural Networks", NeurIPS 2018): out = x * sigmoid(interp(gather(x))), variants of its Fig. 2.
GE-θ⁻ pools as timm's reproduction; GE-θ with extent 0 (a map-sized conv) is rejected: the map size is not given."""
from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.errors import check
from c3exp.schema import NonNegativeInt


class GatherExcite(nn.Module):
    """learned=false: GE-θ⁻ (no parameters); learned=true: GE-θ, log2(e) depthwise stride-2 convs + BN."""

    is_attention = True

    def __init__(self, channels: int, extent: Annotated[NonNegativeInt, "0: the mean over all positions"],
                 learned: bool):
        super().__init__()
        self.extent = extent
        self.learned = learned
        self.gather = None
        if learned:
            check(extent >= 2 and extent & (extent - 1) == 0, "attn.options.extent", extent,
                  "a power of two >= 2 (the paper's 2, 4, 8) when attn.options.learned=true: the learned global "
                  "gather is a depthwise conv as large as each block's map, which this block is not given")
            layers: list[nn.Module] = []
            for _ in range(int(math.log2(extent))):
                depthwise = nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False)
                layers += [depthwise, nn.BatchNorm2d(channels), nn.ReLU()]
            self.gather = nn.Sequential(*layers[:-1])  # no ReLU after the last BN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is not None:
            gathered = self.gather(x)
        elif self.extent == 0:
            return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))
        else:
            kernel = 2 * self.extent - 1
            gathered = F.avg_pool2d(x, kernel, stride=self.extent, padding=self.extent - 1, count_include_pad=False)
        return x * torch.sigmoid(F.interpolate(gathered, size=x.shape[-2:], mode="nearest"))
