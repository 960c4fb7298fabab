"""A task of one's own (docs/extending.md): classification scored by the macro F1 score, named by conf/task/f1.yaml."""
from __future__ import annotations

from typing import ClassVar

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassF1Score

from c3exp.tasks import ClassificationModule, PrimaryMetric


class F1Classification(ClassificationModule):
    """ClassificationModule's loss and steps; its metrics (val/f1, test/f1) are the F1 score averaged over classes."""

    metric_modes: ClassVar[dict[str, str]] = {"f1": "max"}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric("val/f1", "max")

    def make_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"f1": MulticlassF1Score(self.num_classes, average="macro")}, prefix=prefix)
