"""GC: the global context block (Cao, Xu, Lin, Wei and Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019).

Computes out = x + T(sum_j softmax_j(W_k x_j) x_j): one attention-pooled context vector per sample (the
query-independent simplification of a non-local block), transformed by a bottleneck (C -> C * ratio, LayerNorm,
ReLU, -> C) and added to the features at every position.
"""
from __future__ import annotations

from numbers import Real

import torch
from torch import nn

from c3exp.errors import check


class GlobalContext(nn.Module):
    """Context modelling (a 1x1 conv to one logit per position, softmax over positions, weighted sum of the
    features), transform (1x1 conv C -> P, LayerNorm([P, 1, 1]), ReLU, 1x1 conv P -> C) and fusion by addition.

    P = max(1, int(C * ratio)); the paper's GC-ResNet-50 uses ratio 1/16. Parameters, all convolutions with bias as
    in the official code: (C + 1) + (C * P + P) + 2 * P + (P * C + C) = 2 * C * P + 2 * C + 3 * P + 1. The mask's
    bias is kept for that count although the softmax over positions makes it inert (its gradient is zero).

    The 1x1 convolutions act on (N, C) vectors (the pooled context) or per position, so they are nn.Linear
    layers here: the same weights, and the model-wide Conv2d initialisation (c3exp.models.base.init_weights)
    leaves the official one below in place: Kaiming-normal (fan_in) mask, and a zero last layer so that every
    block starts as the identity.
    """

    is_attention = True

    def __init__(self, channels: int, ratio: float = 1 / 16):
        super().__init__()
        check(
            isinstance(ratio, Real) and not isinstance(ratio, bool) and 0 < ratio <= 1,
            "attn.options.ratio",
            ratio,
            "a number in (0, 1]: the transform's hidden width is max(1, int(channels * ratio)) (1/16 = 0.0625 in the paper)",
        )
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
