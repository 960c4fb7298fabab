"""Semantic segmentation (the paper's Table 3, left): metrics from one confusion matrix over the whole split."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex

from c3exp.schema import NonNegativeFloat
from c3exp.tasks.base import PrimaryMetric, TaskModule


class MeanClassAccuracy(MulticlassConfusionMatrix):
    """FCN's "mean accuracy"; torchmetrics' macro accuracy averages in a class predicted but never labelled, as 0."""

    def compute(self) -> torch.Tensor:
        matrix = super().compute()  # rows: labels, columns: predictions
        labelled = matrix.sum(1)
        return (matrix.diag()[labelled > 0] / labelled[labelled > 0]).mean()


class SegmentationModule(TaskModule):
    """Trains a `SegmentationNet` on (images, masks) batches; `val/miou` decides the best checkpoint."""

    metric_modes: ClassVar[dict[str, str]] = {"miou": "max", "macc": "max", "pixel_acc": "max"}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric("val/miou", "max")
    reads_options: ClassVar[frozenset[str]] = frozenset({"label_smoothing", "tta_flip"})

    def __init__(self, *args: Any, aux_weight: NonNegativeFloat, ignore_index: int, **kwargs: Any):
        self.ignore_index, self.aux_weight = ignore_index, float(aux_weight)  # make_metrics reads ignore_index
        super().__init__(*args, **kwargs)

    def make_metrics(self, prefix: str) -> MetricCollection:
        classes, ignore = self.num_classes, self.ignore_index
        # Three views of one confusion matrix: MetricCollection's compute groups update it once per batch.
        return MetricCollection({  # miou's "macro": the mean over the classes in the split's labels or predictions
            "miou": MulticlassJaccardIndex(classes, average="macro", ignore_index=ignore),
            "macc": MeanClassAccuracy(classes, ignore_index=ignore),
            "pixel_acc": MulticlassAccuracy(classes, average="micro", ignore_index=ignore),  # of all labelled pixels
        }, prefix=prefix)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.net(x)
        if self.tta_flip and not self.training:
            mirrored = self.net(x.flip(-1))
            outputs = {key: (value + mirrored[key].flip(-1)) / 2 for key, value in outputs.items()}
        return outputs

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        images, masks = batch
        outputs = self(images)
        loss = self._loss(outputs["out"], masks)
        if "aux" in outputs:
            loss = loss + self.aux_weight * self._loss(outputs["aux"], masks)
        return loss, outputs["out"].detach(), masks, len(images)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, masks, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)

    def random_targets(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        height, width = images.shape[-2:]
        return torch.randint(0, self.num_classes, (len(images), height, width), generator=generator)
