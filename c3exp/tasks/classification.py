"""Image classification (the paper's Table 1): cross-entropy, also with soft labels (MixUp, CutMix), top-1/top-5 accuracy."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from c3exp.tasks.base import PrimaryMetric, TaskModule


class ClassificationModule(TaskModule):
    """`val/acc1` decides; `tta_flip`: evaluation scores the mean logits of each image and its mirror image."""

    metric_modes: ClassVar[dict[str, str]] = {"acc1": "max", "acc5": "max"}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric("val/acc1", "max")
    reads_options: ClassVar[frozenset[str]] = frozenset({"label_smoothing", "tta_flip"})
    summed_metrics: ClassVar[tuple[str, ...]] = ("acc1", "acc5")

    def make_metrics(self, prefix: str) -> MetricCollection:
        top5 = min(5, self.num_classes)
        return MetricCollection({"acc1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro"),
                                 "acc5": MulticlassAccuracy(self.num_classes, top_k=top5, average="micro")}, prefix=prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if self.tta_flip and not self.training:
            logits = (logits + self.net(x.flip(-1))) / 2
        return logits

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        hard = labels.argmax(1) if labels.is_floating_point() else labels  # soft labels: the most probable class
        return loss, logits.detach(), hard, len(labels)

    def metric_sums(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Top-1 and top-5 hits of the batch (MulticlassAccuracy's micro averages, summed)."""
        hits = predictions.topk(min(5, self.num_classes), dim=1).indices == targets[:, None]
        return torch.stack([hits[:, 0].sum(), hits.any(1).sum()])

    def random_targets(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.num_classes, (len(images),), generator=generator)
