"""A backbone of one's own (docs/extending.md): a stem and two one-convolution stages, attention where the attn
config puts it, named by conf/model/tiny.yaml."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from c3exp.models import ResNet, classifier_head, placement_plan


def tiny_net(num_classes: int, attn: Mapping[str, Any] | None = None, width: int = 8) -> ResNet:
    """3 -> width (stem) -> width -> 2 * width channels (stride 2), each conv with BN, attention and ReLU."""
    plan = placement_plan(attn, None, num_stages=2)
    stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    stages = []
    for index, (inputs, outputs) in enumerate([(width, width), (width, 2 * width)]):
        layers = [nn.Conv2d(inputs, outputs, 3, stride=1 + index, padding=1, bias=False), nn.BatchNorm2d(outputs)]
        attention = plan.in_block(index, 0, outputs)  # this stage's first (and only) block, after its BN
        stages.append(nn.Sequential(*layers, *([attention] if attention is not None else []), nn.ReLU()))
    return ResNet(stem, stages, classifier_head(2 * width, num_classes))
