"""Tables 1 and 3 of "Cross-channel Communication Networks" (Yang et al., NeurIPS 2019): the figures we reproduce."""
from __future__ import annotations

from typing import NamedTuple

#: The data set of Table 1.
PAPER_DATA = "cifar100"
PAPER_MODELS = {"resnet20": "ResNet-20", "resnet56": "ResNet-56", "resnet110": "ResNet-110", "wrn": "Wide-ResNet"}
PAPER_ATTNS = {"none": "baseline", "se": "+ SE", "cbam": "+ CBAM", "c3": "+ C3"}
#: The experiment configs of the paper's recipe (SGD 0.1, MultiStepLR, 160 epochs): its figures stand beside their runs.
PAPER_EXPERIMENTS = ("paper_cifar100", "paper_cifar10")


def is_paper_recipe(experiment: str | None) -> bool:
    """Whether runs compare with the paper's figures: another recipe would compare recipes, not implementations."""
    return experiment is None or experiment in PAPER_EXPERIMENTS


class PaperCell(NamedTuple):
    params_m: float | None  # parameters, millions
    flops_m: float | None  # FLOPs as thop counts them (BN and ReLU included), millions
    top1: float | None  # top-1 accuracy, % (Table 1: CIFAR-100; the zoo: ImageNet)


#: (model, attn) -> the paper's figures. The paper has no CBAM column.
TABLE1: dict[tuple[str, str], PaperCell] = {(model, attn): PaperCell(*cell) for model, row in {
    "resnet20": {"none": (0.28, 41.7, 67.73), "se": (0.28, 41.8, 68.57), "c3": (0.35, 46.0, 69.34)},
    "resnet56": {"none": (0.86, 128.2, 71.05), "se": (0.87, 128.5, 72.00), "c3": (0.93, 132.5, 72.27)},
    "resnet110": {"none": (1.74, 257.9, 72.01), "se": (1.76, 258.5, 72.47), "c3": (1.81, 262.2, 73.36)},
    "wrn": {"none": (26.86, 3840.0, 77.96), "se": (27.26, 3840.0, 78.57), "c3": (26.93, 3870.0, 78.34)},
}.items() for attn, cell in row.items()}


# Table 3 of the same paper: the attention blocks in dense-prediction networks.
SEGMENTATION_DATA = "voc2012"


class SegmentationCell(NamedTuple):
    miou: float | None  # mean IoU, %; None where the source is illegible
    macc: float | None  # mean class accuracy ("Mean Acc."), %


#: Table 3 (left): DeepLabv2 with a ResNet-101 backbone, PASCAL VOC 2012 val; attn -> the paper's figures.
#: The baseline's mean IoU is illegible in the source; there is no CBAM row.
TABLE3_SEGMENTATION: dict[str, SegmentationCell] = {
    "none": SegmentationCell(None, 85.3), "se": SegmentationCell(75.6, 85.6), "c3": SegmentationCell(75.1, 86.0)}


class DetectionCell(NamedTuple):
    voc07_map50: float | None  # PASCAL VOC 2007, mAP at IoU 0.5, %
    coco_map: float | None  # COCO, mAP (IoU 0.5:0.95), %


#: The data configs whose cells the paper's detection figures stand beside, and the field of each.
DETECTION_DATA = {"voc2007": "voc07_map50", "coco2017": "coco_map"}

#: Table 3 (right): Faster R-CNN (the paper does not name its backbone's depth); attn -> the paper's figures.
TABLE3_DETECTION: dict[str, DetectionCell] = {
    "none": DetectionCell(74.6, 33.9), "se": DetectionCell(74.8, 34.3), "c3": DetectionCell(75.6, 34.8)}


# The attention zoo on ImageNet: what each block's own paper reports for ResNet-50 (None: no figure there).
ZOO_DATA = "imagenet"
ZOO_MODEL = "resnet50"

#: attn -> the ResNet-50 figures of the block's paper (baseline, SE, CBAM: the CBAM paper's table; CBAM's top-1
#: from its authors' repository). GC, CoordAtt, SRM, GE, non-local and C3 report no such figure.
ZOO_IMAGENET: dict[str, PaperCell] = {
    "none": PaperCell(25.56, 3860.0, None),
    "se": PaperCell(28.09, 3860.0, None),
    "cbam": PaperCell(28.09, 3860.0, 77.62),
    "eca": PaperCell(25.56, 3860.0, 77.48),
    "triplet": PaperCell(25.56, None, 77.48),
    "simam": PaperCell(25.56, None, 77.45),
}
#: Parameters a block's paper says it adds to ResNet-50, where it states the number exactly.
ZOO_ADDED_PARAMS: dict[str, int] = {"eca": 80, "simam": 0}
