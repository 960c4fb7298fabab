"""Object detection (the paper's Table 3, right), judged by COCO's protocol; VOC's "difficult" objects count as crowds."""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torchmetrics import MetricCollection
from torchmetrics.detection import MeanAveragePrecision

from c3exp.tasks.base import PrimaryMetric, TaskModule

Images = Sequence[torch.Tensor]
Targets = Sequence[dict[str, Any]]
EVALUATED_KEYS = ("boxes", "labels", "iscrowd")  # what the metric reads of a ground-truth target
LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")  # torchvision's FasterRCNN


class DetectionAP(MeanAveragePrecision):
    """COCO box AP as loggable scalars: `summary` keys and `<per_class>_<class>` where the split has the class."""

    def __init__(self, class_names: Sequence[str] | None = None, per_class: str = "ap",
                 summary: Sequence[str] = ("map", "map_50", "map_75"), **kwargs: Any):
        super().__init__(box_format="xyxy", iou_type="bbox", class_metrics=True, backend="faster_coco_eval", **kwargs)
        self.class_names, self.per_class, self.summary = class_names, per_class, tuple(summary)
        logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # its INFO lines print COCOeval's whole summary

    def compute(self) -> dict[str, torch.Tensor]:
        result = super().compute()
        scalars = {key: result[key] for key in self.summary}
        for label, ap in zip(result["classes"].reshape(-1).tolist(), result["map_per_class"].reshape(-1)):
            if ap >= 0:
                scalars[f"{self.per_class}_{self.class_key(label)}"] = ap
        return scalars

    def class_key(self, label: int) -> str:
        names = self.class_names
        name = names[label] if names and 0 <= label < len(names) else f"class{label}"
        return re.sub(r"\W+", "_", name).strip("_") or f"class{label}"


def detection_metrics(class_names: Sequence[str] | None = None) -> dict[str, DetectionAP]:
    """mAP, mAP@0.5, mAP@0.75 and AP per class at [.5:.95] and at 0.5, one MetricCollection so both share detections."""
    return {"ap": DetectionAP(class_names),
            "ap50": DetectionAP(class_names, per_class="ap50", summary=(), iou_thresholds=[0.5])}


class DetectionModule(TaskModule):
    """Trains a torchvision FasterRCNN on (images, targets) list batches; `val/map_50` (VOC) or `val/map` decides."""

    metric_modes: ClassVar[dict[str, str]] = {"map": "max", "map_50": "max", "map_75": "max"}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric("val/map_50", "max")
    loss_terms: ClassVar[tuple[str, ...]] = LOSS_TERMS

    def __init__(self, *args: Any, label_smoothing: float = 0.0, tta_flip: bool = False, **kwargs: Any):
        """The recipe options off, no keys of conf/task/detection.yaml: the detector has no such loss or flip averaging."""
        super().__init__(*args, label_smoothing=label_smoothing, tta_flip=tta_flip, **kwargs)

    def make_metrics(self, prefix: str) -> MetricCollection:
        # the detector predicts boxes only in eval mode: training epochs have their losses, not mAP
        return MetricCollection({} if prefix == "train/" else detection_metrics(), prefix=prefix)

    def setup(self, stage: str) -> None:
        """Name the per-class AP keys after the data's classes."""
        names = getattr(self.trainer.datamodule, "class_names", None)
        for metrics in self.metrics.values():
            for metric in metrics.values():
                metric.class_names = list(names) if names else None

    def model_step(self, batch: tuple[Images, Targets]) -> tuple[torch.Tensor | None, Any, Any, int]:
        images, targets = batch
        if self.net.training:
            # every box (crowd and difficult ones too, as torchvision's references) and label
            losses = self.net(list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            for name, value in losses.items():
                self.losses["train_split"][name].update(value.detach(), weight=len(images))
            return sum(losses.values()), None, None, len(images)
        detections = self.net(list(images))
        return None, detections, [{key: t[key] for key in EVALUATED_KEYS if key in t} for t in targets], len(images)

    def random_targets(self, images: torch.Tensor, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
        """1-4 boxes per image, 1/8 to 1/2 of its side, of random classes (the benchmark's targets)."""
        side, targets = torch.tensor(images.shape[-2:][::-1]), []  # (width, height)
        for _ in range(len(images)):
            count = int(torch.randint(1, 5, (), generator=generator))
            wh = (torch.rand(count, 2, generator=generator) * 3 / 8 + 1 / 8) * side
            corner = torch.rand(count, 2, generator=generator) * (side - wh)
            labels = torch.randint(1, self.num_classes, (count,), generator=generator)
            targets.append({"boxes": torch.cat([corner, corner + wh], dim=1), "labels": labels})
        return targets
