"""torchvision's ImageNet ResNets with the same attention options, for larger imagefolder data.

They are also the segmentation backbones: output stride 16 or 8 (the last stages dilated instead
of strided), torchvision's ImageNet weights or a file of them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, Bottleneck

from c3exp.errors import check, is_int
from c3exp.models.base import NUM_CLASSES_HINT, ResNet, init_weights
from c3exp.models.placement import FeatureMaps, attention_at, placement_plan
from c3exp.models.pretrained import load_torchvision_weights, module_names

ARCHS: dict[str, Callable[..., models.ResNet]] = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "resnet152": models.resnet152,
    "resnext50_32x4d": models.resnext50_32x4d,
    "resnext101_32x8d": models.resnext101_32x8d,
    "wide_resnet50_2": models.wide_resnet50_2,
    "wide_resnet101_2": models.wide_resnet101_2,
}
# The input side C3's blocks are sized for when the data does not say (build_model passes the data's).
IMAGENET_INPUT_SIZE = 224
# Output stride -> torchvision's replace_stride_with_dilation for layer2, layer3, layer4 (DeepLab: 16 or 8).
OUTPUT_STRIDES = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
# torchvision's builders refuse dilation in BasicBlock; these archs are rebuilt from their block counts.
BASIC_BLOCKS_PER_STAGE = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


def torchvision_resnet(
    num_classes: int,
    attn: Mapping[str, Any] | None = None,
    arch: str = "resnet18",
    output_stride: int = 32,
    weights: str | None = None,
    input_size: int | None = None,
) -> ResNet:
    """torchvision.models.<arch>(num_classes=...) rearranged as stem / stages / head, with attention.

    Block attention wraps the block's last BN (bn2 or bn3) as Sequential(bn, attention), i.e. after
    it and before the residual add; stage-input attention is the first module of its stage; attn.at
    puts it after torchvision's modules by name (layer3.1.bn3). C3's blocks are sized by the maps at
    each insertion point for `input_size` px inputs (224 when unknown), unless attn.options.spatial_sizes
    sets them. `weights` ("imagenet" or a state dict file) is loaded last, over c3exp's initialisation.
    """
    check(arch in ARCHS, "model.arch", arch, ARCHS)
    check(isinstance(num_classes, int) and num_classes >= 1, "data.num_classes", num_classes, NUM_CLASSES_HINT)
    check(is_int(output_stride) and output_stride in OUTPUT_STRIDES, "model.output_stride", output_stride, OUTPUT_STRIDES)
    net = _torchvision_network(arch, num_classes, OUTPUT_STRIDES[output_stride])
    torchvision_names = module_names(net)  # before the modules move
    maps = FeatureMaps.measure(net, input_size or IMAGENET_INPUT_SIZE)
    plan = placement_plan(attn, None, num_stages=4)
    stages = []
    for index, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
        for position, block in enumerate(layer):
            bn = getattr(block, _last_bn_name(block))
            _attach_after_last_bn(block, plan.in_block(index, position, bn.num_features, maps.block_after(bn)))
        entry = plan.at_stage_input(index, layer[0].conv1.in_channels, maps.block_before(layer))
        stages.append(layer if entry is None else nn.Sequential(entry, *layer))
    tail = plan.after_last_stage(len(stages), net.fc.in_features, maps.block_after(net.layer4))
    if tail is not None:
        stages[-1] = nn.Sequential(*stages[-1], tail)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    model = ResNet(stem, stages, nn.Sequential(net.avgpool, nn.Flatten(), net.fc))
    attention_at(model, attn, maps)
    init_weights(model)
    if weights is not None:
        load_torchvision_weights(model, weights, arch, torchvision_names)
    return model


def _torchvision_network(arch: str, num_classes: int, dilate: tuple[bool, bool, bool]) -> models.ResNet:
    """torchvision's network, its later stages dilated as `dilate` says (torchvision's own bookkeeping)."""
    replace = list(dilate)
    if any(replace) and arch in BASIC_BLOCKS_PER_STAGE:
        return models.ResNet(
            DilatedBasicBlock, BASIC_BLOCKS_PER_STAGE[arch], num_classes=num_classes, replace_stride_with_dilation=replace
        )
    return ARCHS[arch](num_classes=num_classes, replace_stride_with_dilation=replace)


class DilatedBasicBlock(BasicBlock):
    """torchvision's BasicBlock with the dilation it refuses: both 3x3 convolutions dilated and padded alike.

    torchvision's ResNet hands every block its dilation (the first block of a dilated stage gets the
    previous one, as its Bottleneck's 3x3 convolution does); the parameters are BasicBlock's.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ):
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, 1, norm_layer)
        for conv in (self.conv1, self.conv2):
            conv.dilation = conv.padding = (dilation, dilation)


def _last_bn_name(block: nn.Module) -> str:
    return "bn3" if isinstance(block, Bottleneck) else "bn2"


def _attach_after_last_bn(block: nn.Module, attention: nn.Module | None) -> None:
    if attention is not None:
        name = _last_bn_name(block)
        setattr(block, name, nn.Sequential(getattr(block, name), attention))
