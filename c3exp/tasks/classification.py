"""Image classification: cross-entropy, top-1/top-5 accuracy (the paper's Table 1)."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from c3exp.tasks.base import PrimaryMetric, TaskModule


class ClassificationModule(TaskModule):
    """Cross-entropy on (images, labels) batches; `val/acc1` decides the best checkpoint."""

    metric_modes: ClassVar[dict[str, str]] = {"acc1": "max", "acc5": "max"}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric("val/acc1", "max")

    def make_metrics(self, prefix: str) -> MetricCollection:
        top5 = min(5, self.num_classes)
        return MetricCollection(
            {
                "acc1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(self.num_classes, top_k=top5, average="micro"),
            },
            prefix=prefix,
        )

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), logits.detach(), labels, len(labels)

    def random_targets(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.num_classes, (len(images),), generator=generator)
