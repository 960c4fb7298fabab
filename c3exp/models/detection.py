"""Faster R-CNN (torchvision's) over an FPN on c3exp's backbone stages; attention blocks, new to a pretrained
network, always train and keep their own BN even where the backbone's is frozen."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import annotated_types as at
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from c3exp.errors import check, is_int
from c3exp.models.base import ResNet, attention_modules
from c3exp.schema import NonNegativeInt, PositiveFloat, PositiveInt, check_settings
from c3exp.utils.complexity import meta_call, meta_input
from c3exp.utils.modes import evaluating

# FasterRCNN settings the builder supplies itself; every other keyword of FasterRCNN is a task.detector option
SUPPLIED = ("backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std", "rpn_anchor_generator",
            "box_roi_pool", "box_head", "box_predictor")
STRIDE_PROBE = 256  # the input side the pyramid's strides are measured on (divisible by every level's stride)


class StagePyramid(BackboneWithFPN):
    """torchvision's FPN over `backbone`'s `stages`: maps "0".."n-1", finest first, and "pool"."""

    def __init__(self, backbone: ResNet, stages: Sequence[int], out_channels: int):
        parts = OrderedDict([("stem", backbone.stem), *((f"stage{i}", stage) for i, stage in enumerate(backbone.stages))])
        super().__init__(nn.Sequential(parts), {f"stage{i}": str(level) for level, i in enumerate(stages)},
                         [backbone.stage_channels[i] for i in stages], out_channels, extra_blocks=LastLevelMaxPool())

    def train(self, mode: bool = True) -> StagePyramid:
        """Train mode, but BN frozen by freeze_batch_norm keeps normalising with its pretrained statistics."""
        super().train(mode)
        for module in self.modules():
            if getattr(module, "frozen", False):
                module.eval()
        return self

    def strides(self) -> list[int]:
        """Each pyramid level's stride, measured on the shapes of a probe image (dilated backbones keep theirs)."""
        with evaluating(self):
            levels = meta_call(self, meta_input(self, (1, 3, STRIDE_PROBE, STRIDE_PROBE)))
        return [STRIDE_PROBE // level.shape[-1] for level in levels.values()]


def faster_rcnn(
    backbone: ResNet,
    num_classes: int,
    min_size: int | Sequence[int],
    max_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    stages: Sequence[int] | None,
    fpn_channels: PositiveInt,
    anchor_sizes: Sequence[PositiveInt] | None,
    aspect_ratios: Annotated[Sequence[PositiveFloat], at.MinLen(1), "height/width ratios"],
    representation_size: PositiveInt,
    trainable_stages: NonNegativeInt | None,
    frozen_bn: bool,
    detector: Mapping[str, Any] | None,
) -> FasterRCNN:
    """torchvision's FasterRCNN; anchor_sizes null: 8 x each level's stride (torchvision's 32..512 on a ResNet-50)."""
    depth = len(backbone.stages)
    stages = list(range(depth)) if stages is None else list(stages)
    check(bool(stages) and all(is_int(i) and 0 <= i < depth for i in stages) and stages == sorted(set(stages)),
          "task.net.stages", stages, f"increasing stage indices in 0..{depth - 1}")
    options = dict(detector or {})
    check_settings(options, FasterRCNN, "task.net.detector.", supplied=SUPPLIED)

    freeze_stages(backbone, trainable_stages)
    if frozen_bn:
        freeze_batch_norm(backbone)
    pyramid = StagePyramid(backbone, stages, fpn_channels)
    levels = pyramid.strides()
    sizes = [8 * stride for stride in levels] if anchor_sizes is None else list(anchor_sizes)
    check(len(sizes) == len(levels), "task.net.anchor_sizes", anchor_sizes,
          f"null or {len(levels)} positive sizes, one per pyramid level (strides {levels}, the last the extra pool level)")
    anchors = AnchorGenerator(tuple((s,) for s in sizes), (tuple(aspect_ratios),) * len(sizes))
    names = [str(level) for level in range(len(stages))]  # RoIs pool from the FPN levels, not the extra one
    roi_pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    predictor = FastRCNNPredictor(representation_size, num_classes)
    min_sizes = tuple(min_size) if isinstance(min_size, Sequence) else min_size  # torchvision draws from a tuple
    return FasterRCNN(
        pyramid, None, min_size=min_sizes, max_size=max_size, image_mean=list(image_mean), image_std=list(image_std),
        rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head, box_predictor=predictor, **options,
    )


def freeze_stages(backbone: ResNet, trainable_stages: int | None) -> None:
    """Freeze the stem and all but the last `trainable_stages` stages (the stem counts as the first); null: none."""
    if trainable_stages is None:
        return
    parts = [backbone.stem, *backbone.stages]
    check(trainable_stages <= len(parts), "task.net.trainable_stages", trainable_stages,
          f"null (all) or 0..{len(parts)}: how many of the last stages train, the stem counting as one more")
    for part in parts[: len(parts) - trainable_stages]:
        part.requires_grad_(False)
    for module in attention_modules(backbone):
        module.requires_grad_(True)


def freeze_batch_norm(net: nn.Module) -> None:
    """Freeze BN outside attention in place: replacing it (FrozenBatchNorm2d) would drop the attention hooks."""
    keep = attention_modules(net)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d) and module not in keep:
            module.requires_grad_(False).eval()
            module.frozen = True  # StagePyramid.train keeps it in eval mode
