"""What every task shares: optimisation, metrics, and the per-epoch history that makes resumes and results exact."""
from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

import annotated_types as at
import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim.lr_scheduler import LinearLR, OneCycleLR
from torchmetrics import MeanMetric, MetricCollection

from c3exp.errors import NonFiniteLossError, check
from c3exp.results import PrimaryMetric
from c3exp.saved_config import hydra_choices
from c3exp.training.graphs import DeviceLearningRates, StepGraphs, capturable_options, uncached_autocast

log = logging.getLogger(__name__)
THROUGHPUT = ("train/epoch_time", "train/images_per_sec")
STAGES = ("train", "val", "test")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class TaskModule(L.LightningModule):
    """Trains `net`; one history row per epoch in the checkpoint (Lightning's Timer and monitors write only to loggers)."""

    #: Each metric's name after the stage prefix and whether higher ("max") or lower ("min") is better.
    metric_modes: ClassVar[dict[str, str]] = {}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric()
    #: The task options (`label_smoothing`, `tta_flip`) this task reads; the others must stay off.
    reads_options: ClassVar[frozenset[str]] = frozenset()
    #: Terms of the loss whose epoch means model_step keeps in `losses` beside the loss, logged as `<stage>/<term>`.
    loss_terms: ClassVar[tuple[str, ...]] = ()
    #: The metrics `metric_sums` sums, in its order; graphed steps need them to be exactly `metric_modes`' metrics.
    summed_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory,
        *,
        label_smoothing: Annotated[float, at.Interval(ge=0, lt=1), "0: none"],
        tta_flip: bool,
        primary_metric: PrimaryMetric | Mapping[str, Any] | None,  # null: the task's own (default_primary)
        name: str,  # the task config's name, which results and reports read from the config; the module needs none
        channels_last: bool,  # task.channels_last, task.compile, task.cuda_graphs: conf/config.yaml, for every task
        compile: bool,
        cuda_graphs: bool,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        run_config: dict[str, Any] | None = None,
        warmup_epochs: float = 0,
    ):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.compile_net = compile
        self.cuda_graphs, self.graphed = cuda_graphs, False  # graphed: task.cuda_graphs fits this fit (setup decides)
        self.graphs: StepGraphs | None = None  # the training step's graphs, from on_train_start of a graphed fit
        self.eval_graphs: StepGraphs | None = None  # the validation step's, in the same fit
        self.graph_optimizer: torch.optim.Optimizer | None = None
        self.learning_rates: DeviceLearningRates | None = None
        # graphed steps' epoch sums per stage (train, val): loss x images, images, non-finite losses, metric_sums
        self.graph_sums: dict[str, torch.Tensor] = {}
        self.num_classes = num_classes
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        schedule = getattr(scheduler, "func", scheduler)  # the class behind Hydra's partial
        check(not (warmup_epochs and isinstance(schedule, type) and issubclass(schedule, OneCycleLR)),
              "optim.warmup_epochs", warmup_epochs,
              "0 with OneCycleLR (optim=onecycle), which warms up by itself over optim.scheduler.pct_start of the run")
        self.warmup_epochs = float(warmup_epochs)
        for key, value in (("label_smoothing", label_smoothing), ("tta_flip", tta_flip)):
            check(not value or key in self.reads_options, f"task.{key}", value,
                  f"{0 if key == 'label_smoothing' else 'false'}: {type(self).__name__} does not read it")
        self.label_smoothing, self.tta_flip = float(label_smoothing), tta_flip
        self.run_config = run_config or {}
        self.primary_metric = PrimaryMetric.of(primary_metric) if primary_metric else self.default_primary
        check(self.primary_metric.metric in self.metric_modes, "task.primary_metric.name", self.primary_metric.name,
              [f"val/{metric}" for metric in self.metric_modes])
        # keyed "<stage>_split": a plain "train" key would clash with nn.Module.train
        self.metrics = nn.ModuleDict({f"{stage}_split": self.make_metrics(f"{stage}/") for stage in STAGES})
        means = ("loss", *self.loss_terms)
        self.losses = nn.ModuleDict({f"{stage}_split": nn.ModuleDict({name: MeanMetric() for name in means})
                                     for stage in STAGES})
        self.history: list[dict[str, float]] = []
        self.wall_seconds_before = 0.0  # wall-clock time of the earlier processes of a resumed run
        self.process_started = time.time()
        self._epoch_started, self._epoch_seconds, self._epoch_images = 0.0, 0.0, 0
        self._compiled = False

    @property
    def train_seconds(self) -> float:
        """The run's training time, validation left out: its epochs' times."""
        return sum(row.get("train/epoch_time", 0.0) for row in self.history)

    def make_metrics(self, prefix: str) -> MetricCollection:
        """The metrics of one stage, named `<prefix><metric>` for every metric of `metric_modes`."""
        raise NotImplementedError

    def model_step(self, batch: Any) -> tuple[torch.Tensor | None, Any, Any, int]:
        """(loss, predictions, targets, number of images) of one batch; loss or predictions may be None (detectors)."""
        raise NotImplementedError

    def metric_sums(self, predictions: Any, targets: Any) -> torch.Tensor:
        """One batch's `summed_metrics` as sums over its images (a metric is their total over the images), on the
        device and without waiting for it: what graphed steps accumulate."""
        raise NotImplementedError

    @classmethod
    def has_graphed_step(cls) -> bool:
        """Whether `metric_sums` gives this task's own metrics (a subclass with other metrics steps plainly)."""
        return bool(cls.summed_metrics) and cls.summed_metrics == tuple(cls.metric_modes)

    def random_targets(self, images: torch.Tensor, generator: torch.Generator) -> Any:
        """Targets of this task's kind for a batch of `images` (on the CPU): the benchmark's synthetic batches."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """task.compile=true: torch.compile the network in place, so parameter names and checkpoints stay the same."""
        if self.compile_net and not self._compiled:
            self.net.compile()
            self._compiled = True

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(x)

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor | None:
        loss, predictions, targets, images = self.model_step(batch)
        if stage == "train":
            self._epoch_images += images
        if loss is not None:
            self.losses[f"{stage}_split"]["loss"].update(loss.detach(), weight=images)
        for name, mean in self.losses[f"{stage}_split"].items():
            if mean.update_count:
                self.log(f"{stage}/{name}", mean, on_step=False, on_epoch=True, prog_bar=name == "loss")
        if predictions is not None:
            self.metrics[f"{stage}_split"].update(predictions, targets)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if self.graphs is None:
            return self._shared_step(batch, "train")
        self.learning_rates.refresh()
        self.graphs(*batch)
        self._epoch_images += len(batch[0])
        return None  # the whole step ran, the optimiser's included: optimizer_step only runs Lightning's closure

    def graph_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One training step as StepGraphs captures it: device work only, the epoch's sums accumulated in place."""
        optimizer, device = self.graph_optimizer, images.device.type
        optimizer.zero_grad(set_to_none=True)
        with uncached_autocast(device):
            loss, sums = self.graph_forward(images, targets)
        with torch.autocast(device, enabled=False):
            loss.backward()
            optimizer.step()
        self.graph_sums["train"].add_(sums)
        return loss.detach()

    def graph_eval_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One validation step as StepGraphs captures it (eval mode, no autograd): the epoch's sums accumulated in place."""
        with uncached_autocast(images.device.type):
            loss, sums = self.graph_forward(images, targets)
        self.graph_sums["val"].add_(sums)
        return loss

    def graph_forward(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the batch's sums: loss x images, images, whether the loss is non-finite, then metric_sums."""
        loss, predictions, hard_targets, count = self.model_step((images, targets))
        value = loss.detach().float()
        counts = torch.stack([value * count, torch.full_like(value, count), (~value.isfinite()).float()])
        return loss, torch.cat([counts, self.metric_sums(predictions, hard_targets).float()])

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        if self.graphs is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer_closure()  # training_step, which stepped the optimiser inside the graph

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        if self.graphs is None:  # a graphed step zeroes its gradients itself
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.eval_graphs is None:  # also a fit's sanity check, which runs before on_train_start
            self._shared_step(batch, "val")
        else:
            self.eval_graphs(*batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def split_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """The metrics of `stage` over the epoch's batches so far (computed once, then cached by torchmetrics)."""
        metrics = self.metrics[f"{stage}_split"]
        return metrics.compute() if any(metric.update_count for metric in metrics.values()) else {}

    def setup(self, stage: str) -> None:
        """task.cuda_graphs: graph the training steps where they fit the run, else say in one line why not."""
        if stage != "fit":
            return
        self.graphed, self.graphs, self.eval_graphs = False, None, None
        if not self.cuda_graphs:
            return
        reason = self.graphs_unfit_reason()
        self.graphed = reason is None
        cuda = self.trainer.strategy.root_device.type == "cuda"
        log.info("task.cuda_graphs=true: %s", reason or ("training steps are captured as CUDA graphs" if cuda else
                 f"the graphed training step runs uncaptured on {self.trainer.strategy.root_device.type} "
                 "(CUDA graphs need a CUDA GPU)"))

    def graphs_unfit_reason(self) -> str | None:
        """Why this run cannot graph its training steps (it then trains with plain steps), or None."""
        trainer, optimizer = self.trainer, getattr(self.optimizer_factory, "func", self.optimizer_factory)
        if not self.has_graphed_step():
            return (f"{type(self).__name__} has no graphed step for its metrics ({', '.join(self.metric_modes)}); "
                    "training with plain steps")
        if trainer.world_size > 1:
            return f"data-parallel training ({trainer.world_size} processes) is not graphed; training with plain steps"
        if str(trainer.precision).startswith("16"):
            return f"trainer.precision={trainer.precision} scales losses by a host decision; plain steps (bf16-mixed is graphed)"
        if trainer.gradient_clip_val or trainer.accumulate_grad_batches > 1:
            return "gradient clipping and accumulation run between Lightning's backward and step; training with plain steps"
        if trainer.strategy.root_device.type == "cuda" and not capturable_options(optimizer):
            return f"{optimizer.__name__} has no fused step to capture; training with plain steps"
        return None

    def on_train_start(self) -> None:
        """A schedule of a fixed length in steps (OneCycleLR's, a resumed run's included) must cover the run."""
        if self.graphed:
            self.start_graphs(self.trainer.optimizers[0])
        needed = int(self.trainer.estimated_stepping_batches)
        for config in self.trainer.lr_scheduler_configs:
            total = getattr(config.scheduler, "total_steps", None)
            check(total is None or config.interval != "step" or total >= needed, "trainer.max_epochs",
                  self.trainer.max_epochs, f"a run of at most the {total} steps the learning-rate schedule spans "
                  f"({needed} asked); a checkpoint keeps the schedule its run started with: train longer in a new run "
                  f"(resume=never) or give optim.scheduler.total_steps={needed} from the start")

    def start_graphs(self, optimizer: torch.optim.Optimizer) -> None:
        """Graph the training steps that `optimizer` takes (its step made capturable on CUDA): a fit's, or the bench's."""
        if self.device.type == "cuda":  # set here, not at construction: a resumed checkpoint's groups replace those
            for group in optimizer.param_groups:
                group.update(capturable_options(type(optimizer)))
        self.graph_optimizer, self.learning_rates = optimizer, DeviceLearningRates(optimizer, self.device)
        self.graphs = StepGraphs(self.graph_step, around_capture=self.learning_rates.in_groups)
        self.eval_graphs = StepGraphs(self.graph_eval_step)
        self.graph_sums = {stage: torch.zeros(3 + len(self.summed_metrics), device=self.device) for stage in ("train", "val")}

    def on_train_epoch_start(self) -> None:
        self._epoch_started, self._epoch_seconds, self._epoch_images = time.perf_counter(), 0.0, 0
        self.metrics["train_split"].reset()
        if self.graphs is not None:
            self.graph_sums["train"].zero_()
        self.log("train/lr", self._lr(), on_step=False, on_epoch=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """The epoch's training time so far: up to its last batch when validation starts."""
        self._epoch_seconds = time.perf_counter() - self._epoch_started

    def _lr(self) -> float:
        return float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def _epoch_row(self, stages: tuple[str, ...]) -> dict[str, float]:
        """Log the epoch's throughput; its history row: epoch, lr, the losses and metrics of `stages`, the throughput."""
        images = self._epoch_images * self.trainer.world_size
        throughput = dict(zip(THROUGHPUT, (self._epoch_seconds, images / max(self._epoch_seconds, 1e-9))))
        self.log_dict(throughput, on_step=False, on_epoch=True)
        row = {"epoch": self.current_epoch, "lr": self._lr()}
        for stage in stages:
            row.update(self.stage_means(stage))
        return row | throughput

    def stage_means(self, stage: str) -> dict[str, float]:
        """The epoch's mean losses and metrics of `stage` so far, named `<stage>/<name>`."""
        if stage in self.graph_sums and self.graphs is not None:
            return self.graphed_means(stage)
        means = self.losses[f"{stage}_split"]
        losses = {f"{stage}/{name}": float(mean.compute()) for name, mean in means.items() if mean.update_count}
        return losses | {key: float(value) for key, value in self.split_metrics(stage).items()}

    def graphed_means(self, stage: str) -> dict[str, float]:
        """The graphed steps' epoch sums of `stage` as means: the one host wait of the stage's epoch."""
        total, images, nonfinite, *hits = self.graph_sums[stage].tolist()
        if nonfinite and stage == "train":
            raise NonFiniteLossError(
                f"training loss became NaN or infinite in {int(nonfinite)} steps of epoch {self.current_epoch}; stopped "
                f"without saving it (the last good checkpoint is kept). Try a lower optim.optimizer.lr or "
                f"trainer.gradient_clip_val=1.0 (which trains with plain steps)")
        metrics = {"loss": total, **dict(zip(self.summed_metrics, hits, strict=True))}
        return {f"{stage}/{name}": value / images for name, value in metrics.items()} if images else {}

    def _has_row(self) -> bool:
        return bool(self.history) and self.history[-1]["epoch"] == self.current_epoch

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.split_metrics("test"), prog_bar=True)
        self.metrics["test_split"].reset()

    def on_validation_epoch_start(self) -> None:
        if self.eval_graphs is not None:
            self.graph_sums["val"].zero_()

    def on_validation_epoch_end(self) -> None:
        """Log the val metrics (over the whole split: mAP needs every image); this epoch's row, before the checkpoints."""
        self.log_dict(self.split_metrics("val") if self.eval_graphs is None else self.graphed_means("val"), prog_bar=True)
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            if self._has_row():  # validated twice in one epoch (val_check_interval < 1): keep the latest
                self.history.pop()
            self.history.append(self._epoch_row(("train", "val")))
        self.metrics["val_split"].reset()

    def on_train_epoch_end(self) -> None:
        """The row of an epoch without validation; Lightning calls this before the checkpoints' on_train_epoch_end."""
        self.log_dict(self.split_metrics("train") if self.graphs is None else self.graphed_means("train"))
        if not self._has_row():
            self.history.append(self._epoch_row(("train",)))
        if self.trainer.is_global_zero:
            log.info(epoch_line(self.history[-1], self.trainer.max_epochs))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["c3exp"] = {
            "history": self.history,
            "wall_seconds": self.wall_seconds_before + time.time() - self.process_started,
            "config": self.run_config,
            "choices": hydra_choices(),  # the config groups eval and analyze rebuild the run from
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming a fit restores the run's history and time; testing a (best) checkpoint leaves them."""
        if self.trainer.state.fn == TrainerFn.FITTING:
            state = checkpoint.get("c3exp", {})
            self.history = list(state.get("history", []))
            self.wall_seconds_before = float(state.get("wall_seconds", 0.0))

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        schedulers = []
        if self.scheduler_factory is not None:
            length = {}  # OneCycleLR's total_steps, where not given: Lightning's count of the run's optimiser steps
            steps = inspect.signature(self.scheduler_factory).parameters.get("total_steps")
            if steps is not None and steps.default is None:
                length["total_steps"] = int(self.trainer.estimated_stepping_batches)
            scheduler = self.scheduler_factory(optimizer=optimizer, **length)
            schedulers.append({"scheduler": scheduler, "interval": self.scheduler_interval})
        if self.warmup_epochs:
            schedulers.append({"scheduler": self._warmup(optimizer), "interval": "step"})
        return [optimizer], schedulers

    def _warmup(self, optimizer: torch.optim.Optimizer) -> LinearLR:
        """Step s (0-based) of the first W = warmup_epochs x steps per epoch scales the schedule's lr by (s + 1) / W;
        cosine to eta_min > 0 steps affinely, so a ramp past the first epoch is off the product (0.3 % for 1.5 of 4)."""
        steps_per_epoch = self.trainer.estimated_stepping_batches / self.trainer.max_epochs
        steps = max(1, round(self.warmup_epochs * steps_per_epoch))
        return LinearLR(optimizer, start_factor=1 / steps, end_factor=1.0, total_iters=steps - 1)


def epoch_line(row: Mapping[str, float], epochs: int) -> str:
    """One line per epoch for logs without a progress bar, numbered as Lightning's bar: 'epoch 0/29' is the first of 30."""
    metrics = " ".join(f"{key}={value:.4f}" for key, value in row.items() if "/" in key and key not in THROUGHPUT)
    return f"epoch {int(row['epoch'])}/{epochs - 1}: {metrics} lr={row['lr']:.4g} ({row.get('train/epoch_time', 0.0):.1f} s)"
