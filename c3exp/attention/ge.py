"""Gather-Excite (Hu, Shen, Albanie, Sun and Vedaldi, "Gather-Excite: Exploiting Feature Context in
Convolutional Neural Networks", NeurIPS 2018).

Each channel is gathered over a spatial extent (its whole map, or windows about e times its stride), the
gathered map is resized back to H x W by nearest-neighbour interpolation, and the features are re-weighted
by its sigmoid: out = x * sigmoid(interp(gather(x))).

Two of the paper's variants (its Fig. 2), chosen by `learned`:

- GE-θ⁻ (`learned: false`, no parameters). Global extent (`extent: 0`): gather = the mean over the H*W
  positions, as in the official Caffe model RN50-GEPF. Extent e >= 1: average pooling with kernel 2e - 1,
  stride e and padding e - 1, padded cells left out of the average (count_include_pad=False), the
  definition timm's reproduction uses: window k is centred on position e*k and reaches e - 1 cells either
  side, so the pooled map has ceil(H / e) x ceil(W / e) cells and neighbouring windows overlap by one cell.
  (The official release has no finite-extent θ⁻ model to check this against.)
- GE-θ (`learned: true`), extent e a power of two >= 2: log2(e) depthwise 3 x 3 convolutions of stride 2
  (padding 1, no bias, as the official DepthwiseConvolution layers), each followed by BN, with a ReLU
  between consecutive ones (timm's reproduction): 11 * C * log2(e) parameters (9 C weights + 2 C BN affine
  per convolution). The paper's global GE-θ (official RN50-GEP) is one depthwise convolution as large as
  the feature map (56 x 56 in its first stage), so its weights depend on each block's map size, which the
  attention factory does not pass to this block: `learned: true` with `extent: 0` is rejected rather than
  silently changed into something else.

Channel-permutation equivariance: GE-θ⁻ is equivariant (every channel is gated by a function of its own map
only); GE-θ is not (each channel has its own depthwise filters and BN affine).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.errors import check, is_int


def ge_params(channels: int, extent: int = 0, learned: bool = False) -> int:
    """The block's parameter count in closed form: 0 for GE-θ⁻, 11 * C * log2(e) for GE-θ."""
    return 11 * channels * int(math.log2(extent)) if learned else 0


def is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


class GatherExcite(nn.Module):
    """out = x * sigmoid(nearest-resize of gather(x) to H x W); see the module docstring for the variants."""

    is_attention = True

    def __init__(self, channels: int, extent: int = 0, learned: bool = False):
        super().__init__()
        check(isinstance(learned, bool), "attn.options.learned", learned, "true (GE-θ) or false (GE-θ⁻, no parameters)")
        if learned:
            check(
                is_int(extent) and extent >= 2 and is_power_of_two(extent),
                "attn.options.extent",
                extent,
                "a power of two >= 2 (the paper's 2, 4, 8) when attn.options.learned=true: the learned global "
                "gather is a depthwise conv as large as each block's map, which this block is not given",
            )
        else:
            check(
                is_int(extent) and extent >= 0,
                "attn.options.extent",
                extent,
                "0 (global: the mean over all positions) or a positive integer e (the paper's 2, 4, 8)",
            )
        self.extent = extent
        self.learned = learned
        self.gather = None
        if learned:
            layers: list[nn.Module] = []
            for index in range(int(math.log2(extent))):
                if index:
                    layers.append(nn.ReLU())
                layers += [
                    nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False),
                    nn.BatchNorm2d(channels),
                ]
            self.gather = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is not None:
            gathered = self.gather(x)
        elif self.extent == 0:
            return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))
        else:
            kernel = 2 * self.extent - 1
            gathered = F.avg_pool2d(x, kernel, stride=self.extent, padding=self.extent - 1, count_include_pad=False)
        return x * torch.sigmoid(F.interpolate(gathered, size=x.shape[-2:], mode="nearest"))
