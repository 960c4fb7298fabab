"""Tables 1 and 3 of "Cross-channel Communication Networks" (Yang et al., NeurIPS 2019): the figures we reproduce."""
from __future__ import annotations

from typing import NamedTuple

#: The data set of Table 1.
PAPER_DATA = "cifar100"
PAPER_MODELS = {"resnet20": "ResNet-20", "resnet56": "ResNet-56", "resnet110": "ResNet-110", "wrn": "Wide-ResNet"}
PAPER_ATTNS = {"none": "baseline", "se": "+ SE", "cbam": "+ CBAM", "c3": "+ C3"}


class PaperCell(NamedTuple):
    params_m: float  # parameters, millions
    flops_m: float  # FLOPs as thop counts them (BN and ReLU included), millions
    top1: float  # CIFAR-100 top-1 accuracy, %


#: (model, attn) -> the paper's figures. The paper has no CBAM column.
TABLE1: dict[tuple[str, str], PaperCell] = {
    ("resnet20", "none"): PaperCell(0.28, 41.7, 67.73),
    ("resnet20", "se"): PaperCell(0.28, 41.8, 68.57),
    ("resnet20", "c3"): PaperCell(0.35, 46.0, 69.34),
    ("resnet56", "none"): PaperCell(0.86, 128.2, 71.05),
    ("resnet56", "se"): PaperCell(0.87, 128.5, 72.00),
    ("resnet56", "c3"): PaperCell(0.93, 132.5, 72.27),
    ("resnet110", "none"): PaperCell(1.74, 257.9, 72.01),
    ("resnet110", "se"): PaperCell(1.76, 258.5, 72.47),
    ("resnet110", "c3"): PaperCell(1.81, 262.2, 73.36),
    ("wrn", "none"): PaperCell(26.86, 3840.0, 77.96),
    ("wrn", "se"): PaperCell(27.26, 3840.0, 78.57),
    ("wrn", "c3"): PaperCell(26.93, 3870.0, 78.34),
}


# Table 3 of the same paper: the attention blocks in dense-prediction networks.
SEGMENTATION_DATA = "voc2012"


class SegmentationCell(NamedTuple):
    miou: float | None  # mean IoU, %; None where the source is illegible
    macc: float | None  # mean class accuracy ("Mean Acc."), %


#: Table 3 (left): DeepLabv2 with a ResNet-101 backbone, PASCAL VOC 2012 val; attn -> the paper's figures.
#: The baseline's mean IoU is illegible in the source; there is no CBAM row.
TABLE3_SEGMENTATION: dict[str, SegmentationCell] = {
    "none": SegmentationCell(None, 85.3),
    "se": SegmentationCell(75.6, 85.6),
    "c3": SegmentationCell(75.1, 86.0),
}


class DetectionCell(NamedTuple):
    voc07_map50: float | None  # PASCAL VOC 2007, mAP at IoU 0.5, %
    coco_map: float | None  # COCO, mAP (IoU 0.5:0.95), %


#: The data configs whose cells the paper's detection figures stand beside, and the field of each.
DETECTION_DATA = {"voc2007": "voc07_map50", "coco2017": "coco_map"}

#: Table 3 (right): Faster R-CNN (the paper does not name its backbone's depth); attn -> the paper's figures.
TABLE3_DETECTION: dict[str, DetectionCell] = {
    "none": DetectionCell(74.6, 33.9),
    "se": DetectionCell(74.8, 34.3),
    "c3": DetectionCell(75.6, 34.8),
}
