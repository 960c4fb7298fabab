"""torchvision's ImageNet ResNets with the same attention options, for larger imagefolder data."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn
from torchvision import models
from torchvision.models.resnet import Bottleneck

from c3exp.errors import check
from c3exp.models.base import NUM_CLASSES_HINT, ResNet, init_weights
from c3exp.models.placement import AttentionPlan

ARCHS: dict[str, Callable[..., models.ResNet]] = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
}
# C3's block size before each of the 4 stages, for 224x224 inputs (stage inputs 56, 56, 28, 14): the
# CIFAR sizes' A = 256 positions (divisible by the default reduction 8), and 8x8 on the 14x14 stage.
TORCHVISION_SPATIAL_SIZES = ((16, 16), (16, 16), (16, 16), (8, 8))


def torchvision_resnet(num_classes: int, attn: Mapping[str, Any] | None = None, arch: str = "resnet18") -> ResNet:
    """torchvision.models.<arch>(num_classes=...) rearranged as stem / stages / head, with attention.

    Block attention wraps the block's last BN (bn2 or bn3) as Sequential(bn, attention), i.e. after
    it and before the residual add; stage-input attention is the first module of its stage.
    """
    check(arch in ARCHS, "model.arch", arch, ARCHS)
    check(isinstance(num_classes, int) and num_classes >= 1, "data.num_classes", num_classes, NUM_CLASSES_HINT)
    net = ARCHS[arch](num_classes=num_classes)
    plan = AttentionPlan.from_config(attn, TORCHVISION_SPATIAL_SIZES)
    stages = []
    for index, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
        for position, block in enumerate(layer):
            _attach_after_last_bn(block, plan.in_block(index, position, _out_channels(block)))
        entry = plan.at_stage_input(index, layer[0].conv1.in_channels)
        stages.append(layer if entry is None else nn.Sequential(entry, *layer))
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    model = ResNet(stem, stages, nn.Sequential(net.avgpool, nn.Flatten(), net.fc))
    init_weights(model)
    return model


def _last_bn_name(block: nn.Module) -> str:
    return "bn3" if isinstance(block, Bottleneck) else "bn2"


def _out_channels(block: nn.Module) -> int:
    return getattr(block, _last_bn_name(block)).num_features


def _attach_after_last_bn(block: nn.Module, attention: nn.Module | None) -> None:
    if attention is not None:
        name = _last_bn_name(block)
        setattr(block, name, nn.Sequential(getattr(block, name), attention))
