"""Faster R-CNN on c3exp's ResNets: a feature pyramid over the backbone's stage outputs.

torchvision's detector, anchors, RoI pooling and heads, unchanged; what c3exp adds is the backbone
side: any c3exp ResNet (with any attention and placement) feeds its stage outputs to an FPN, one
anchor size per pyramid level, and, for pretrained backbones, torchvision's frozen BN and trainable
stages. Attention blocks, new to a pretrained network, always train and keep their own BN.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from c3exp.errors import check, check_keywords, is_int
from c3exp.models.base import ResNet, attention_modules
from c3exp.utils.modes import evaluating

# FasterRCNN settings the builder supplies itself; every other keyword of FasterRCNN is a task.detector option
SUPPLIED = ("backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std", "rpn_anchor_generator",
            "box_roi_pool", "box_head", "box_predictor")
STRIDE_PROBE = 256  # the input side the pyramid's strides are measured on (divisible by every level's stride)


class StagePyramid(nn.Module):
    """Backbone stages -> FPN maps "0".."n-1" (finest first) and "pool": what torchvision's detectors take.

    The backbone's classifier is dropped (no loss reaches it). `out_channels` is every level's width.
    """

    def __init__(self, backbone: ResNet, stages: Sequence[int], out_channels: int):
        super().__init__()
        self.body = ResNet(backbone.stem, backbone.stages, nn.Identity())
        self.stages = tuple(stages)
        channels = [backbone.stage_channels[i] for i in self.stages]
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        outputs = self.body.stage_outputs(x)
        return self.fpn(OrderedDict((str(level), outputs[i]) for level, i in enumerate(self.stages)))

    def strides(self) -> list[int]:
        """Each pyramid level's stride, measured on one probe image (dilated backbones keep theirs)."""
        probe = torch.zeros(1, 3, STRIDE_PROBE, STRIDE_PROBE, device=next(self.parameters()).device)
        with evaluating(self), torch.no_grad():
            return [STRIDE_PROBE // level.shape[-1] for level in self(probe).values()]


def faster_rcnn(
    backbone: ResNet,
    num_classes: int,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] = (0.485, 0.456, 0.406),
    image_std: Sequence[float] = (0.229, 0.224, 0.225),
    stages: Sequence[int] | None = None,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    representation_size: int = 1024,
    trainable_stages: int | None = None,
    frozen_bn: bool = False,
    detector: Mapping[str, Any] | None = None,
) -> FasterRCNN:
    """torchvision's FasterRCNN over an FPN on `backbone`'s `stages` (default: all of them).

    `anchor_sizes`: one per pyramid level, the extra "pool" level included; null: 8 x each level's
    stride (torchvision's 32..512 for a ResNet-50). `trainable_stages`: how many of the last stages
    train (the stem counts as one more, as torchvision's trainable_layers); null: all. `frozen_bn`:
    the backbone's BatchNorm layers become FrozenBatchNorm2d (torchvision's detection backbones).
    `detector`: other FasterRCNN keywords (rpn_batch_size_per_image, box_detections_per_img, ...).
    """
    check(is_int(num_classes) and num_classes >= 2, "data.num_classes", num_classes,
          "an integer >= 2: the object classes plus the background")
    depth = len(backbone.stages)
    stages = list(range(depth)) if stages is None else list(stages)
    check(bool(stages) and all(is_int(i) and 0 <= i < depth for i in stages) and stages == sorted(set(stages)),
          "task.network.stages", stages, f"increasing stage indices in 0..{depth - 1}")
    check(is_int(fpn_channels) and fpn_channels >= 1, "task.network.fpn_channels", fpn_channels, "an integer >= 1")
    check(is_int(representation_size) and representation_size >= 1, "task.network.representation_size", representation_size,
          "an integer >= 1")
    check(isinstance(frozen_bn, bool), "task.network.frozen_bn", frozen_bn, "true or false")
    options = dict(detector or {})
    check_keywords(options, FasterRCNN, "task.network.detector.", "a keyword of torchvision's FasterRCNN", supplied=SUPPLIED)

    freeze_stages(backbone, trainable_stages)
    if frozen_bn:
        freeze_batch_norm(backbone)
    pyramid = StagePyramid(backbone, stages, fpn_channels)
    levels = pyramid.strides()
    sizes = [8 * stride for stride in levels] if anchor_sizes is None else list(anchor_sizes)
    check(len(sizes) == len(levels) and all(s > 0 for s in sizes), "task.network.anchor_sizes", anchor_sizes,
          f"null or {len(levels)} positive sizes, one per pyramid level (strides {levels}, the last the extra pool level)")
    check(len(aspect_ratios) >= 1 and all(r > 0 for r in aspect_ratios), "task.network.aspect_ratios", list(aspect_ratios),
          "positive height/width ratios such as [0.5, 1.0, 2.0]")
    anchors = AnchorGenerator(tuple((s,) for s in sizes), (tuple(aspect_ratios),) * len(sizes))
    names = [str(level) for level in range(len(stages))]  # RoIs pool from the FPN levels, not the extra one
    roi_pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    predictor = FastRCNNPredictor(representation_size, num_classes)
    return FasterRCNN(
        pyramid, None, min_size=min_size, max_size=max_size, image_mean=list(image_mean), image_std=list(image_std),
        rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head, box_predictor=predictor, **options,
    )


def freeze_stages(backbone: ResNet, trainable_stages: int | None) -> None:
    """Freeze the stem and all but the last `trainable_stages` stages (the stem counts as the first); null: none."""
    parts = [backbone.stem, *backbone.stages]
    if trainable_stages is None:
        return
    check(is_int(trainable_stages) and 0 <= trainable_stages <= len(parts), "task.network.trainable_stages", trainable_stages,
          f"null (all) or 0..{len(parts)}: how many of the last stages train, the stem counting as one more")
    keep = attention_modules(backbone)
    for part in parts[: len(parts) - trainable_stages]:
        for module in part.modules():
            if module not in keep:
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(False)


def freeze_batch_norm(net: nn.Module) -> None:
    """Replace every BatchNorm2d outside attention blocks by a FrozenBatchNorm2d with its statistics and affine."""
    keep = attention_modules(net)
    for parent in list(net.modules()):
        if parent in keep:
            continue
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, _frozen(child))


def _frozen(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        frozen.weight.copy_(bn.weight)
        frozen.bias.copy_(bn.bias)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen.to(bn.weight.device)
