"""torchvision's ImageNet ResNets with c3exp's attention; dilated (output stride 16 or 8) as segmentation backbones."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock

from c3exp.models.base import ResNet
from c3exp.models.torchvision_net import Layout, pretrained_and_measured, with_attention

Arch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
               "wide_resnet50_2", "wide_resnet101_2"]
# Output stride -> torchvision's replace_stride_with_dilation for layer2, layer3, layer4 (DeepLab: 16 or 8).
OUTPUT_STRIDES = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
# torchvision's builders refuse dilation in BasicBlock; these archs are rebuilt from their block counts.
BASIC_BLOCKS_PER_STAGE = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


def torchvision_resnet(num_classes: int, attn: Mapping[str, Any] | None = None, *, arch: Arch,
                       output_stride: Literal[32, 16, 8], weights: str | None, input_size: int | None = None) -> ResNet:
    """torchvision's <arch> as stem / stages / head; block attention follows each block's last BN."""
    replace = list(OUTPUT_STRIDES[output_stride])
    if any(replace) and arch in BASIC_BLOCKS_PER_STAGE:
        blocks = BASIC_BLOCKS_PER_STAGE[arch]
        net = models.ResNet(DilatedBasicBlock, blocks, num_classes, replace_stride_with_dilation=replace)
    else:
        net = models.get_model(arch, num_classes=num_classes, replace_stride_with_dilation=replace)
    maps = pretrained_and_measured(net, weights, arch, input_size)
    layers = [list(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    points = [[(block, getattr(block, "bn3", block.bn2)) for block in layer] for layer in layers]  # the last BN
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return with_attention(Layout(stem, layers, points, nn.Sequential(net.avgpool, nn.Flatten(), net.fc)), attn, maps)


class DilatedBasicBlock(BasicBlock):
    """torchvision's BasicBlock with the dilation it refuses (both 3x3 convolutions), as its ResNet hands it out."""

    def __init__(self, *args: Any, **kwargs: Any):
        settings = inspect.signature(BasicBlock).bind(*args, **kwargs).arguments
        dilation = settings.pop("dilation", 1)
        super().__init__(**settings)
        for conv in (self.conv1, self.conv2):
            conv.dilation = conv.padding = (dilation, dilation)
