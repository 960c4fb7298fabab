"""A segmentation head of one's own (docs/extending.md): a 3x3 convolution, ReLU, then 1x1 to the class scores,
named by conf/task/segmentation_tiny_head.yaml."""
from __future__ import annotations

from torch import nn


class TinyHead(nn.Sequential):
    """Called as c3exp's heads are: the backbone's last-stage channels, the class count, then the options."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 8):
        super().__init__(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, num_classes, 1))
