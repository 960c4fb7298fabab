"""What every task shares: optimisation, the per-epoch history that makes resumes exact, and the
declaration of the task's metrics and primary metric that checkpoints, results and reports read.

A task is a LightningModule subclass of `TaskModule` plus a config in `conf/task/`; it says how to
build its network (`build_network`), which metrics it computes (`make_metrics`, `metric_modes`) and
what one step computes (`model_step`). Everything else here serves every task unchanged.
"""
from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import LinearLR, OneCycleLR
from torchmetrics import MeanMetric, MetricCollection

from c3exp.errors import check, is_number
from c3exp.results import PrimaryMetric
from c3exp.saved_config import hydra_choices

log = logging.getLogger(__name__)
THROUGHPUT = ("train/epoch_time", "train/images_per_sec")

STAGES = ("train", "val", "test")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class TaskModule(L.LightningModule):
    """Trains `net`; logs `train/*`, `val/*`, `test/*` and keeps one history row per epoch.

    The history (epoch-level metrics) travels in the checkpoint, so a resumed run reports the same
    curves and best values as an uninterrupted one.
    """

    #: Each metric's name after the stage prefix and whether higher ("max") or lower ("min") is better.
    metric_modes: ClassVar[dict[str, str]] = {}
    #: The primary metric when the task config names none.
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric()
    #: The options of the task config (`label_smoothing`, `tta_flip`) that this task's loss and evaluation read;
    #: the others must stay off, or a task built on another's config (task._target_=...) would ignore them.
    reads_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        run_config: dict[str, Any] | None = None,
        primary_metric: PrimaryMetric | Mapping[str, Any] | None = None,
        name: str | None = None,
        warmup_epochs: float = 0,
        label_smoothing: float = 0.0,
        tta_flip: bool = False,
    ):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.warmup_epochs = checked_warmup(warmup_epochs, scheduler)
        self.label_smoothing, self.tta_flip = self._read_options(label_smoothing=label_smoothing, tta_flip=tta_flip)
        self.run_config = run_config or {}
        self.primary_metric = PrimaryMetric.of(primary_metric) if primary_metric else self.default_primary
        check(self.primary_metric.metric in self.metric_modes, "task.primary_metric.name", self.primary_metric.name,
              [f"val/{metric}" for metric in self.metric_modes])
        # keyed "<stage>_split": a plain "train" key would clash with nn.Module.train
        self.metrics = nn.ModuleDict({f"{stage}_split": self.make_metrics(f"{stage}/") for stage in STAGES})
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

    def _read_options(self, label_smoothing: float, tta_flip: bool) -> tuple[float, bool]:
        """The task config's loss and evaluation options, checked: each a valid value, and off where the task ignores it.

        label_smoothing: F.cross_entropy's share of each target spread evenly over the classes; tta_flip:
        validation and test average the outputs of each image and of its mirror image.
        """
        check(is_number(label_smoothing) and 0 <= label_smoothing < 1,
              "task.label_smoothing", label_smoothing, "a number from 0 (none) up to, not including, 1")
        check(isinstance(tta_flip, bool), "task.tta_flip", tta_flip, "true or false")
        for key, value in (("label_smoothing", label_smoothing), ("tta_flip", tta_flip)):
            check(not value or key in self.reads_options, f"task.{key}", value,
                  f"{0 if key == 'label_smoothing' else 'false'}: {type(self).__name__} does not read it")
        return float(label_smoothing), tta_flip

    # -- what a task provides -----------------------------------------------------------------
    @classmethod
    def build_network(cls, cfg: DictConfig) -> nn.Module:
        """The network this task trains for a composed config: by default the model group's network."""
        from c3exp.models import build_model

        return build_model(cfg)

    def make_metrics(self, prefix: str) -> MetricCollection:
        """The metrics of one stage, named `<prefix><metric>` for every metric of `metric_modes`."""
        raise NotImplementedError

    def model_step(self, batch: Any) -> tuple[torch.Tensor | None, Any, Any, int]:
        """(loss, predictions, targets, number of images) of one batch; predictions and targets feed the metrics.

        A task whose network gives no loss in eval mode (detectors) returns loss None there, and one
        that predicts nothing in training mode returns predictions None there.
        """
        raise NotImplementedError

    def random_targets(self, images: torch.Tensor, generator: torch.Generator) -> Any:
        """Targets of this task's kind for a batch of `images` (on the CPU): the benchmark's synthetic batches."""
        raise NotImplementedError

    # -- steps -----------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """model.compile=true: torch.compile the network in place, so parameter names and checkpoints stay the same."""
        if self.run_config.get("model", {}).get("compile") and not self._compiled:
            self.net.compile()
            self._compiled = True

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(x)

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor | None:
        loss, predictions, targets, images = self.model_step(batch)
        if stage == "train":
            self._epoch_images += images
        if loss is not None:
            self.losses[f"{stage}_split"].update(loss.detach(), weight=images)
            self.log(f"{stage}/loss", self.losses[f"{stage}_split"], on_step=False, on_epoch=True, prog_bar=True)
        if predictions is not None:
            self.metrics[f"{stage}_split"].update(predictions, targets)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def epoch_summary(self, stage: str) -> dict[str, float]:
        """This epoch's running loss (where the task has one for `stage`) and metrics, before they are reset."""
        losses = self.losses[f"{stage}_split"]
        summary = {f"{stage}/loss": float(losses.compute())} if losses.update_count else {}
        summary.update({key: float(value) for key, value in self.split_metrics(stage).items()})
        return summary

    def split_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """The metrics of `stage` over the epoch's batches so far (computed once, then cached by torchmetrics)."""
        metrics = self.metrics[f"{stage}_split"]
        return metrics.compute() if any(metric.update_count for metric in metrics.values()) else {}

    def _log_split_metrics(self, stage: str) -> None:
        """Log the epoch's metrics of `stage`, computed over the whole split (mAP needs every image at once)."""
        self.log_dict(self.split_metrics(stage), prog_bar=stage != "train")

    # -- epoch bookkeeping -----------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._epoch_started, self._epoch_images = time.perf_counter(), 0
        self.metrics["train_split"].reset()
        # Not LearningRateMonitor: it needs a logger and writes only to loggers; the history and epoch line need lr too.
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)

    def on_train_start(self) -> None:
        """A schedule of a fixed length in steps (OneCycleLR's total_steps) must cover the run, or it fails mid-run.

        A resumed run keeps the schedule of the run it continues: more trainer.max_epochs than that
        run had would step past its end.
        """
        needed = int(self.trainer.estimated_stepping_batches)
        for config in self.trainer.lr_scheduler_configs:
            total = getattr(config.scheduler, "total_steps", None)
            check(total is None or config.interval != "step" or total >= needed, "trainer.max_epochs",
                  self.trainer.max_epochs, f"a run of at most the {total} steps the learning-rate schedule spans "
                  f"({needed} asked); a checkpoint keeps the schedule its run started with: train longer in a new run "
                  f"(resume=never) or give optim.scheduler.total_steps={needed} from the start")

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
        self.metrics["val_split"].reset()
        if self._validating_during_fit() and not self._has_row():
            self._throughput = self._stop_epoch_clock()

    def on_test_epoch_start(self) -> None:
        self.metrics["test_split"].reset()

    def on_test_epoch_end(self) -> None:
        self._log_split_metrics("test")

    def on_validation_epoch_end(self) -> None:
        """Log the val metrics; append this epoch's row (train and val) before on_validation_end's checkpoints."""
        self._log_split_metrics("val")
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
        self._log_split_metrics("train")
        if not self._has_row():
            self.history.append(self._epoch_row(("train",), self._stop_epoch_clock()))
        if self.trainer.is_global_zero:
            log.info(epoch_line(self.history[-1], self.trainer.max_epochs))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["c3exp"] = {
            "history": self.history,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds_before + time.time() - self.process_started,
            "config": self.run_config,
            "choices": hydra_choices(),  # the config groups eval and analyze rebuild the run from
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
        schedulers = []
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer=optimizer, **self._run_length(self.scheduler_factory))
            schedulers.append({"scheduler": scheduler, "interval": self.scheduler_interval})
        if self.warmup_epochs:
            schedulers.append({"scheduler": self._warmup(optimizer), "interval": "step"})
            return [optimizer], schedulers
        return {"optimizer": optimizer, "lr_scheduler": schedulers[0]} if schedulers else optimizer

    def _warmup(self, optimizer: torch.optim.Optimizer) -> LinearLR:
        """Optimiser step s (0-based) of the first W = warmup_epochs x steps per epoch runs at (s + 1) / W of the lr.

        Stepped every optimiser step, it scales the lr the recipe's schedule sets. MultiStepLR and CosineAnnealingLR
        to eta_min=0 (the recipes') scale the current lr too, so a step sees exactly the product of both factors.
        Cosine to eta_min > 0 moves the lr by an affine step, which a ramp over an epoch's end puts off the product
        (by 0.3 % in a 4-epoch cosine to lr / 10 after a 1.5-epoch ramp); a warm-up within the first epoch leaves it exact.
        """
        steps_per_epoch = self.trainer.estimated_stepping_batches / self.trainer.max_epochs
        steps = max(1, round(self.warmup_epochs * steps_per_epoch))
        return LinearLR(optimizer, start_factor=1 / steps, end_factor=1.0, total_iters=steps - 1)

    def _run_length(self, factory: SchedulerFactory) -> dict[str, int]:
        """{"total_steps": N} for a scheduler that takes the run's length in steps (OneCycleLR) and was not given it.

        N is Lightning's count of optimiser steps in the whole run (epochs x batches, limits applied).
        """
        given = getattr(factory, "keywords", {})
        takes = "total_steps" in inspect.signature(factory).parameters
        return {"total_steps": int(self.trainer.estimated_stepping_batches)} if takes and "total_steps" not in given else {}


def checked_warmup(epochs: float, scheduler: SchedulerFactory | None) -> float:
    """optim.warmup_epochs: a number >= 0, and 0 with OneCycleLR, whose own warm-up (pct_start) sets every step's lr."""
    check(is_number(epochs) and epochs >= 0, "optim.warmup_epochs", epochs,
          "a number of epochs >= 0 (fractions too), 0 for none")
    schedule = getattr(scheduler, "func", scheduler)  # the class behind Hydra's partial
    one_cycle = isinstance(schedule, type) and issubclass(schedule, OneCycleLR)
    check(not (epochs and one_cycle), "optim.warmup_epochs", epochs,
          "0 with OneCycleLR (optim=onecycle), which warms up by itself over optim.scheduler.pct_start of the run")
    return float(epochs)


def epoch_line(row: Mapping[str, float], epochs: int) -> str:
    """One line of progress per epoch for train.log and logs without a progress bar (nohup, SLURM, CI)."""
    metrics = " ".join(f"{key}={value:.4f}" for key, value in row.items() if "/" in key and key not in THROUGHPUT)
    return f"epoch {int(row['epoch']) + 1}/{epochs}: {metrics} lr={row['lr']:.4g} ({row.get('train/epoch_time', 0.0):.1f} s)"
