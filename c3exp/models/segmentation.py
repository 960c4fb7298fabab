"""Semantic segmentation on c3exp's ResNets: a head on the last stage, an optional auxiliary head."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from c3exp.models.base import ResNet
from c3exp.models.heads import create_head


class SegmentationNet(nn.Module):
    """torchvision's {"out", "aux"} at input size; the backbone's classifier goes (unused parameters make DDP fail)."""

    def __init__(self, backbone: ResNet, head: nn.Module, aux_head: nn.Module | None = None):
        super().__init__()
        self.backbone = ResNet(backbone.stem, backbone.stages, nn.Identity())
        self.head = head
        self.aux_head = aux_head

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return self.backbone.stage_channels

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel statistics and CAMs read them as for classification."""
        return self.backbone.stage_outputs(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.stage_outputs(x)
        size = x.shape[-2:]
        result = {"out": _upsample(self.head(stages[-1]), size)}
        if self.aux_head is not None:
            result["aux"] = _upsample(self.aux_head(stages[-2]), size)
        return result


def segmentation_net(backbone: ResNet, num_classes: int, head: str | Mapping[str, Any], aux_loss: bool,
                     head_options: Mapping[str, Any] | None) -> SegmentationNet:
    """`head` on the backbone's last stage and, with `aux_loss`, an FCN head on the one before."""
    channels = backbone.stage_channels
    main = create_head(head, channels[-1], num_classes, **dict(head_options or {}))
    aux = FCNHead(channels[-2], num_classes) if aux_loss else None  # as torchvision's DeepLabV3 puts on layer3
    return SegmentationNet(backbone, main, aux)


def _upsample(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
