"""torchvision's classifiers as stem / stages / head with attention added after their weights, replacing no module."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision import models

from c3exp.errors import check
from c3exp.models.base import ResNet, classifier_head, init_weights
from c3exp.models.placement import FeatureMaps, attention_at, block_size, placement_plan
from c3exp.models.pretrained import load_torchvision_weights

IMAGENET_INPUT_SIZE = 224  # torchvision's classifiers' input side, C3's blocks sized for it when the data sets none


@dataclass
class Layout:
    """torchvision's modules as c3exp's parts; points[s]: (block, module) per block end, None for a stage's own end."""

    stem: nn.Module
    stages: list[list[nn.Module]]
    points: list[list[tuple[nn.Module | None, nn.Module]]]
    head: nn.Module


def mobilenet_layout(net: models.MobileNetV2) -> Layout:
    """A stage starts at each stride-2 inverted residual; the final 1x1 conv closes the last; block ends: last BNs."""
    stem, *blocks, last = net.features
    stages: list[list[nn.Module]] = []
    for block in blocks:
        if not stages or block.stride > 1:
            stages.append([])
        stages[-1].append(block)
    points = [[(block, block.conv[-1]) for block in stage] for stage in stages]
    stages[-1].append(last)
    return Layout(stem, stages, points, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *net.classifier))


def vgg_layout(net: models.VGG) -> Layout:
    """Stem: the first conv-BN-ReLU (stage-input attention never sees RGB); stages: the conv groups with their pools."""
    features = list(net.features)
    pools = [index for index, module in enumerate(features) if isinstance(module, nn.MaxPool2d)]
    starts = [3, *(pool + 1 for pool in pools[:-1])]
    stages = [features[start : pool + 1] for start, pool in zip(starts, pools)]
    return Layout(nn.Sequential(*features[:3]), stages, [[(None, stage[-2])] for stage in stages],
                  nn.Sequential(net.avgpool, nn.Flatten(), *net.classifier))


# arch -> its layout (torchvision builds the arch). vgg11_bn is left out: its first group has one conv, the stem's.
ARCHS: dict[str, Callable[[Any], Layout]] = {
    "mobilenet_v2": mobilenet_layout, "vgg13_bn": vgg_layout, "vgg16_bn": vgg_layout, "vgg19_bn": vgg_layout,
}


def torchvision_net(num_classes: int, attn: Mapping[str, Any] | None = None, *, arch: str, weights: str | None,
                    input_size: int | None = None) -> ResNet:
    """torchvision's <arch>; VGG below 224 px without weights: a pooled linear head, not 120M on a repeated 1x1 map."""
    check(arch in ARCHS, "model.arch", arch, ARCHS)
    net = models.get_model(arch, num_classes=num_classes)
    maps = pretrained_and_measured(net, weights, arch, input_size)
    layout = ARCHS[arch](net)
    if isinstance(net, models.VGG) and weights is None and (input_size or IMAGENET_INPUT_SIZE) < IMAGENET_INPUT_SIZE:
        layout.head = classifier_head(maps.outputs[net.features][0], num_classes)
    return with_attention(layout, attn, maps)


def pretrained_and_measured(net: nn.Module, weights: str | None, arch: str, input_size: int | None) -> FeatureMaps:
    if weights is not None:
        load_torchvision_weights(net, weights, arch)
    return FeatureMaps.measure(net, input_size or IMAGENET_INPUT_SIZE)


def with_attention(layout: Layout, attn: Mapping[str, Any] | None, maps: FeatureMaps) -> ResNet:
    """The layout's parts as a ResNet with the attn group's blocks, each sized by its measured map."""
    plan = placement_plan(attn, None, num_stages=len(layout.stages))
    stages = []
    for index, (modules, points) in enumerate(zip(layout.stages, layout.points)):
        modules = list(modules)
        for position, (block, point) in enumerate(points):
            attention = plan.in_block(index, position, maps.outputs[point][0], block_size(maps.outputs[point]))
            if attention is not None and block is None:
                modules.insert(modules.index(point) + 1, attention)
            elif attention is not None:
                block.attention = attention
                point.register_forward_hook(partial(apply_after, attention))
        entry = plan.at_stage_input(index, maps.inputs[modules[0]][0], block_size(maps.inputs[modules[0]]))
        stages.append(nn.Sequential(*([entry] if entry is not None else []), *modules))
    last = maps.outputs[layout.stages[-1][-1]]
    tail = plan.after_last_stage(len(stages), last[0], block_size(last))
    if tail is not None:
        stages[-1].append(tail)
    model = ResNet(layout.stem, stages, layout.head)
    attention_at(model, attn, maps)
    init_weights(nn.ModuleList(module for module in model.modules() if getattr(module, "is_attention", False)))
    return model


def apply_after(attention: nn.Module, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """A forward hook: `attention` on the output of the module it hangs on (a partial: deep copies and pickles)."""
    return attention(output)
