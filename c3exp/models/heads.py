"""Segmentation heads on a backbone's last map: DeepLabv2's ASPP and torchvision's DeepLabv3 head."""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import annotated_types as at
import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from c3exp.errors import check, imported
from c3exp.schema import PositiveInt, check_settings

HEAD_KEY = "task.net.head"
HEAD_OPTIONS_KEY = "task.net.head_options"
DEEPLABV2_RATES = (6, 12, 18, 24)
Rates = Annotated[Sequence[PositiveInt], at.MinLen(1), "DeepLabv2: 6, 12, 18, 24"]


class DeepLabV2Head(nn.Module):
    """DeepLabv2's ASPP (Chen et al., 2017): summed dilated 3x3 convs to class scores, no BN or image pooling (v3's)."""

    def __init__(self, in_channels: int, num_classes: int, rates: Rates = DEEPLABV2_RATES):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates)
        for branch in self.branches:
            nn.init.normal_(branch.weight, std=0.01)
            nn.init.zeros_(branch.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functools.reduce(torch.add, (branch(x) for branch in self.branches))


HEADS: dict[str, Callable[..., nn.Module]] = {"deeplabv2": DeepLabV2Head, "deeplabv3": DeepLabHead}


def create_head(head: str | Mapping[str, Any], in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """One of HEADS by name, or a node whose `_target_` is a head of one's own, its other keys the keywords."""
    if isinstance(head, Mapping):
        factory, prefix = imported(head.get("_target_"), f"{HEAD_KEY}._target_"), f"{HEAD_KEY}."
        options = {**{key: value for key, value in head.items() if key != "_target_"}, **options}
    else:
        check(head in HEADS, HEAD_KEY, head, [*HEADS, "or {_target_: module.Class} (a head of one's own)"])
        factory, prefix = HEADS[head], f"{HEAD_OPTIONS_KEY}."
    check_settings(options, factory, prefix, supplied=("in_channels", "num_classes"))
    return factory(in_channels, num_classes, **options)
