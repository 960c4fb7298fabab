"""The LightningModule: cross-entropy classification with top-1/top-5 accuracy and a per-epoch history."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

STAGES = ("train", "val", "test")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    top5 = min(5, num_classes)
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
        },
        prefix=prefix,
    )


class ClassificationModule(L.LightningModule):
    """Trains `net` with cross-entropy; logs `train/*`, `val/*`, `test/*` and keeps an epoch history.

    The history (one dict of epoch-level metrics per epoch) travels in the checkpoint, so a resumed
    run reports the same curves and best values as an uninterrupted one.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        run_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.run_config = run_config or {}
        # keyed "<stage>_split": a plain "train" key would clash with nn.Module.train
        self.metrics = nn.ModuleDict({f"{stage}_split": accuracy_metrics(num_classes, f"{stage}/") for stage in STAGES})
        self.losses = nn.ModuleDict({f"{stage}_split": MeanMetric() for stage in STAGES})
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        # Wall-clock time of earlier processes of this run, up to their checkpoint (resumed runs).
        self.wall_seconds_before = 0.0
        self.process_started = time.time()
        self._epoch_started = 0.0
        self._epoch_images = 0
        self._throughput: dict[str, float] = {}
        self._compiled = False

    def configure_model(self) -> None:
        """model.compile=true: torch.compile the network in place, so parameter names and checkpoints stay the same."""
        if self.run_config.get("model", {}).get("compile") and not self._compiled:
            self.net.compile()
            self._compiled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.losses[f"{stage}_split"].update(loss.detach(), weight=len(labels))
        self.metrics[f"{stage}_split"].update(logits.detach(), labels)
        self.log(f"{stage}/loss", self.losses[f"{stage}_split"], on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.metrics[f"{stage}_split"], on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self._epoch_images += len(batch[1])
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def epoch_summary(self, stage: str) -> dict[str, float]:
        """This epoch's running loss and accuracies for `stage`, before Lightning resets them."""
        summary = {f"{stage}/loss": float(self.losses[f"{stage}_split"].compute())}
        summary.update({key: float(value) for key, value in self.metrics[f"{stage}_split"].compute().items()})
        return summary

    # -- epoch bookkeeping -----------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._epoch_started, self._epoch_images = time.perf_counter(), 0
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)

    def _validating_during_fit(self) -> bool:
        return self.trainer.state.fn == "fit" and not self.trainer.sanity_checking

    def _stop_epoch_clock(self) -> dict[str, float]:
        """End this epoch's training time (once per epoch), add it to the total; the epoch's throughput."""
        seconds = time.perf_counter() - self._epoch_started
        self.train_seconds += seconds
        images = self._epoch_images * self.trainer.world_size
        return {
            "train/epoch_time": seconds,
            "train/images_per_sec": images / max(seconds, 1e-9),
        }

    def _has_row(self) -> bool:
        return bool(self.history) and self.history[-1]["epoch"] == self.current_epoch

    def _epoch_row(self, stages: tuple[str, ...], throughput: dict[str, float]) -> dict[str, float]:
        """Log the epoch's throughput; its history row: epoch, lr, the metrics of `stages` and the throughput."""
        self.log_dict(throughput, on_step=False, on_epoch=True)
        row = {"epoch": self.current_epoch, "lr": self.trainer.optimizers[0].param_groups[0]["lr"]}
        for stage in stages:
            row.update(self.epoch_summary(stage))
        return row | throughput

    def on_validation_epoch_start(self) -> None:
        """Validation runs at the end of a training epoch: stop the epoch's training clock here."""
        if self._validating_during_fit() and not self._has_row():
            self._throughput = self._stop_epoch_clock()

    def on_validation_epoch_end(self) -> None:
        """Append this epoch's row (train and val metrics) before the checkpoints of on_validation_end are saved."""
        if not self._validating_during_fit():
            return
        row = self._epoch_row(("train", "val"), self._throughput)
        if self._has_row():  # validated twice in one epoch (val_check_interval < 1): keep the latest
            self.history[-1] = row
        else:
            self.history.append(row)

    def on_train_epoch_end(self) -> None:
        """An epoch without validation (trainer.check_val_every_n_epoch > 1) gets its row of train metrics here.

        Lightning calls this after the epoch's validation loop and before the checkpoint callbacks'
        on_train_epoch_end, so last.ckpt always holds the row of the epoch it ends.
        """
        if not self._has_row():
            self.history.append(self._epoch_row(("train",), self._stop_epoch_clock()))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["c3exp"] = {
            "history": self.history,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds_before + time.time() - self.process_started,
            "config": self.run_config,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming a fit restores the run's history and times; testing a (best) checkpoint leaves them."""
        if self._trainer is not None and self.trainer.state.fn != TrainerFn.FITTING:
            return
        state = checkpoint.get("c3exp", {})
        self.history = list(state.get("history", []))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.wall_seconds_before = float(state.get("wall_seconds", 0.0))

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
