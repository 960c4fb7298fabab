"""Object detection: torchvision's Faster R-CNN with an FPN over a c3exp backbone, the paper's Table 3 (right).

Training minimises the detector's own four losses (RPN objectness and box regression, RoI
classification and box regression); evaluation is COCO's protocol through torchmetrics'
MeanAveragePrecision: mAP@[.5:.95] (the paper's COCO figure), mAP@0.5 (its VOC 2007 figure, here
with COCO's 101-point interpolation, not VOC 2007's 11 points) and AP per class. VOC's "difficult"
and COCO's crowd objects reach the metric as crowd regions, which neither count as misses nor make
a detection on them a false positive (a detection falls on one by the share of it inside the region,
COCO's rule, where VOC's evaluation takes the IoU with a difficult object).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.detection import MeanAveragePrecision

from c3exp.errors import check, check_keywords
from c3exp.tasks.base import PrimaryMetric, TaskModule

Images = Sequence[torch.Tensor]
Targets = Sequence[dict[str, Any]]
EVALUATED_KEYS = ("boxes", "labels", "iscrowd")  # what the metric reads of a ground-truth target
LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")  # torchvision's FasterRCNN
SUPPLIED = ("backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std")  # from the model and data groups


class DetectionAP(MeanAveragePrecision):
    """COCO-style box AP as scalars: map, map_50, map_75, and ap_<class> / ap50_<class> for each labelled class.

    `class_names[label]` names the keys (the data module's, set by the task once data is attached);
    without names, `class<label>`. Classes without ground truth in the split have no AP and no key.
    """

    def __init__(self, class_names: Sequence[str] | None = None, **kwargs: Any):
        super().__init__(box_format="xyxy", iou_type="bbox", class_metrics=True, extended_summary=True,
                         backend="faster_coco_eval", **kwargs)
        self.class_names = list(class_names) if class_names else None
        logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # its INFO lines print COCOeval's whole summary

    def compute(self) -> dict[str, torch.Tensor]:
        result = super().compute()
        scalars = {key: result[key] for key in ("map", "map_50", "map_75")}
        # precision: (IoU thresholds, recall thresholds, classes, area ranges, max detections); -1 where undefined
        precision = result["precision"][:, :, :, 0, -1]
        at_50 = self.iou_thresholds.index(0.5) if 0.5 in self.iou_thresholds else None
        for index, label in enumerate(result["classes"].reshape(-1).tolist()):
            values = precision[:, :, index]
            if (values < 0).all():  # no ground truth of this class
                continue
            name = self.class_key(label)
            scalars[f"ap_{name}"] = _mean_defined(values)
            if at_50 is not None:
                scalars[f"ap50_{name}"] = _mean_defined(values[at_50])
        return scalars

    def class_key(self, label: int) -> str:
        names = self.class_names
        name = names[label] if names and 0 <= label < len(names) else f"class{label}"
        return re.sub(r"\W+", "_", name).strip("_") or f"class{label}"


def _mean_defined(values: torch.Tensor) -> torch.Tensor:
    defined = values[values >= 0]
    return defined.mean().float() if defined.numel() else torch.tensor(-1.0)


class DetectionModule(TaskModule):
    """Trains a torchvision FasterRCNN on (images, targets) list batches; `val/map_50` (VOC) or `val/map` decides."""

    metric_modes: ClassVar[dict[str, str]] = {"map": "max", "map_50": "max", "map_75": "max"}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric("val/map_50", "max")

    def __init__(self, *args: Any, network: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)  # `network` (the detector's settings) is build_network's, kept in the config
        self.loss_terms = nn.ModuleDict({name: MeanMetric() for name in LOSS_TERMS})  # their epoch means, as train/<term>

    @classmethod
    def build_network(cls, cfg: DictConfig) -> nn.Module:
        """FasterRCNN over the model group's network, sized by the data's min_size/max_size and normalised by its mean/std."""
        from c3exp.models import build_model, faster_rcnn

        data = cfg.data
        settings = OmegaConf.to_container(cfg.task.get("network") or {}, resolve=True)
        check(isinstance(settings, dict), "task.network", settings, "a mapping of faster_rcnn's settings")
        check_keywords(settings, faster_rcnn, "task.network.", "a setting of c3exp.models.faster_rcnn", supplied=SUPPLIED)
        sizes = {key: data[key] for key in ("min_size", "max_size") if data.get(key) is not None}
        if isinstance(sizes.get("min_size"), Sequence):
            sizes["min_size"] = tuple(sizes["min_size"])
        normalisation = {name: list(data[key]) for name, key in (("image_mean", "mean"), ("image_std", "std")) if data.get(key)}
        return faster_rcnn(build_model(cfg), data.num_classes, **sizes, **normalisation, **settings)

    def make_metrics(self, prefix: str) -> MetricCollection:
        # the detector predicts boxes only in eval mode: training epochs have their losses, not mAP
        return MetricCollection({} if prefix == "train/" else {"ap": DetectionAP()}, prefix=prefix)

    def setup(self, stage: str) -> None:
        """Name the per-class AP keys after the data's classes."""
        names = getattr(self.trainer.datamodule, "class_names", None)
        for metrics in self.metrics.values():
            for metric in metrics.values():
                metric.class_names = list(names) if names else None

    def model_step(self, batch: tuple[Images, Targets]) -> tuple[torch.Tensor | None, Any, Any, int]:
        images, targets = batch
        if self.net.training:
            losses = self.net(list(images), [_training_target(t) for t in targets])
            for name, value in losses.items():
                self.loss_terms[name].update(value.detach(), weight=len(images))
            return sum(losses.values()), None, None, len(images)
        detections = self.net(list(images))
        return None, detections, [{key: t[key] for key in EVALUATED_KEYS if key in t} for t in targets], len(images)

    def training_step(self, batch: tuple[Images, Targets], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        for name, mean in self.loss_terms.items():
            self.log(f"train/{name}", mean, on_step=False, on_epoch=True)
        return loss

    def epoch_summary(self, stage: str) -> dict[str, float]:
        """The base summary, and in training the epoch means of the detector's four losses."""
        summary = super().epoch_summary(stage)
        if stage == "train":
            summary.update({f"train/{name}": float(mean.compute()) for name, mean in self.loss_terms.items()
                            if mean.update_count})
        return summary

    def random_targets(self, images: torch.Tensor, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
        """1-4 boxes per image, 1/8 to 1/2 of its side, of random classes (the benchmark's targets)."""
        height, width = images.shape[-2:]
        targets = []
        for _ in range(len(images)):
            count = int(torch.randint(1, 5, (), generator=generator))
            size = torch.rand(count, 2, generator=generator) * 3 / 8 + 1 / 8
            wh = size * torch.tensor([width, height])
            corner = torch.rand(count, 2, generator=generator) * (torch.tensor([width, height]) - wh)
            boxes = torch.cat([corner, corner + wh], dim=1)
            labels = torch.randint(1, self.num_classes, (count,), generator=generator)
            targets.append({"boxes": boxes, "labels": labels})
        return targets


def _training_target(target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """What FasterRCNN trains on: every box (crowd and difficult ones too, as torchvision's references) and label."""
    return {"boxes": target["boxes"], "labels": target["labels"]}
