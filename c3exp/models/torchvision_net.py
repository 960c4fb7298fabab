"""torchvision's MobileNetV2 and VGG-BN classifiers as c3exp networks: stem / stages / head, with attention.

Each family says how torchvision's `features` split into a stem and stages and where its blocks end
(the points block attention goes after); the rest is shared: attention placed by the attn group (or
at torchvision's module paths, attn.at), C3 sized by the map at each point, torchvision's weights.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from torchvision import models

from c3exp.errors import check
from c3exp.models.base import NUM_CLASSES_HINT, ResNet, init_weights
from c3exp.models.placement import FeatureMaps, attention_at, insert_after, placement_plan
from c3exp.models.pretrained import load_torchvision_weights, module_names
from c3exp.models.torchvision_resnet import IMAGENET_INPUT_SIZE


@dataclass
class Layout:
    """A torchvision network cut into c3exp's parts; `points[s]` are stage s's block ends, in order."""

    stem: nn.Module
    stages: list[list[nn.Module]]
    points: list[list[nn.Module]]
    head: nn.Module


def mobilenet_layout(net: models.MobileNetV2) -> Layout:
    """Stem: the first conv; a stage starts at each stride-2 inverted residual (output strides 2 to 32), the
    final 1x1 conv (1280 channels) closes the last. Block ends: each inverted residual's last BN, i.e. before
    its residual add where it has one."""
    stem, *blocks, last = net.features
    stages: list[list[nn.Module]] = []
    for block in blocks:
        if not stages or block.stride > 1:
            stages.append([])
        stages[-1].append(block)
    points = [[block.conv[-1] for block in stage] for stage in stages]
    stages[-1].append(last)
    # torchvision's forward pools and flattens functionally: the same operations as modules. Every head
    # ends with its linear layer (head[-1]), as the ResNets' do.
    return Layout(stem, stages, points, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *net.classifier))


def vgg_layout(net: models.VGG) -> Layout:
    """Stem: the first conv-BN-ReLU (so stage-input attention never sees the RGB image); stages: the conv groups,
    each ending with its max-pool. One block end per stage: its last ReLU, before the pool."""
    features = list(net.features)
    pools = [index for index, module in enumerate(features) if isinstance(module, nn.MaxPool2d)]
    starts = [3, *(pool + 1 for pool in pools[:-1])]
    stages = [features[start : pool + 1] for start, pool in zip(starts, pools)]
    return Layout(nn.Sequential(*features[:3]), stages, [[stage[-2]] for stage in stages],
                  nn.Sequential(net.avgpool, nn.Flatten(), *net.classifier))


# arch -> (torchvision builder, layout). vgg11_bn is left out: its first group has one conv, the stem's.
ARCHS: dict[str, tuple[Callable[..., nn.Module], Callable[[Any], Layout]]] = {
    "mobilenet_v2": (models.mobilenet_v2, mobilenet_layout),
    "vgg13_bn": (models.vgg13_bn, vgg_layout),
    "vgg16_bn": (models.vgg16_bn, vgg_layout),
    "vgg19_bn": (models.vgg19_bn, vgg_layout),
}


def torchvision_net(
    num_classes: int,
    attn: Mapping[str, Any] | None = None,
    arch: str = "mobilenet_v2",
    weights: str | None = None,
    input_size: int | None = None,
) -> ResNet:
    """torchvision.models.<arch>(num_classes=...) as stem / stages / head, with attention.

    Block attention goes after each block end (see the layouts; for VGG every_block, first_block and
    every_other_block all mean the one end per stage), stage-input attention first in its stage, and
    after_last_stage's module last in the last stage; attn.at puts it after torchvision's modules by
    name (features.13.conv.3). C3's blocks are sized by the map at each point for `input_size` px inputs
    (224 when unknown) unless attn.options.spatial_sizes sets one per stage.

    The network keeps torchvision's own initialisation (N(0, 0.01) linear layers, which c3exp's ResNet
    scheme leaves alone anyway): attn=none gives torchvision's weights for the same seed. Attention
    modules get c3exp's scheme, as in every other network. `weights` ("imagenet" or a state dict
    file) is loaded last.
    """
    check(arch in ARCHS, "model.arch", arch, ARCHS)
    check(isinstance(num_classes, int) and num_classes >= 1, "data.num_classes", num_classes, NUM_CLASSES_HINT)
    build, layout_of = ARCHS[arch]
    net = build(num_classes=num_classes)
    torchvision_names = module_names(net)
    maps = FeatureMaps.measure(net, input_size or IMAGENET_INPUT_SIZE)
    layout = layout_of(net)
    plan = placement_plan(attn, None, num_stages=len(layout.stages))
    blocks, stages = {}, []
    for index, (modules, points) in enumerate(zip(layout.stages, layout.points)):
        for position, point in enumerate(points):
            blocks[point] = plan.in_block(index, position, maps.outputs[point][0], maps.block_after(point))
        entry = plan.at_stage_input(index, maps.inputs[modules[0]][0], maps.block_before(modules[0]))
        stages.append(nn.Sequential(*([entry] if entry is not None else []), *modules))
    last = layout.stages[-1][-1]
    tail = plan.after_last_stage(len(stages), maps.outputs[last][0], maps.block_after(last))
    if tail is not None:
        stages[-1].append(tail)
    model = ResNet(layout.stem, stages, layout.head)
    insert_after(model, {point: block for point, block in blocks.items() if block is not None})
    attention_at(model, attn, maps)
    init_weights(nn.ModuleList(module for module in model.modules() if getattr(module, "is_attention", False)))
    if weights is not None:
        load_torchvision_weights(model, weights, arch, torchvision_names)
    return model
