"""Callbacks that make runs reproducible across interruptions, the weights' average a recipe may ask for, and pruning."""
from __future__ import annotations

import math
import os
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig

from c3exp.data.device import epoch_seed
from c3exp.errors import NonFiniteLossError
from c3exp.training.tuning import current_trial


class EpochSeed(L.Callback):
    """Reseed all RNGs per epoch before its iterator (a fit's first: at setup/load): a resume sees the same batches."""

    def __init__(self, seed: int):
        self.seed = seed
        self._seeded_epoch: int | None = None
        self._resumed_epoch: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._seeded_epoch, self._resumed_epoch = None, None
            self._reseed(trainer.current_epoch)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """The epoch a resumed fit starts with: the number of epochs the checkpoint had processed."""
        self._resumed_epoch = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
        if trainer.state.fn == TrainerFn.FITTING:  # not when testing a checkpoint
            self._reseed(self._resumed_epoch)

    def _reseed(self, epoch: int) -> None:
        if epoch != self._seeded_epoch:
            L.seed_everything(epoch_seed(self.seed, epoch), workers=True, verbose=False)
            # PL_GLOBAL_SEED seeds Lightning's DistributedSampler (which adds the epoch): it stays the run's seed
            os.environ["PL_GLOBAL_SEED"] = str(self.seed)
            self._seeded_epoch = epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Seeded already by `setup` or `on_load_checkpoint` unless they were skipped: then here, before the data."""
        self._reseed(trainer.current_epoch if self._resumed_epoch is None else self._resumed_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer.current_epoch)


class StopOnNonFiniteLoss(L.Callback):
    """Stop at the first NaN/inf training loss: checkpoints are written at validation, so the newest predates it."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # graphed steps return nothing: their epoch sums count non-finite losses (TaskModule.graphed_means)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(loss.detach().isfinite().all()):
            raise NonFiniteLossError(
                f"training loss became {float(loss.detach())} at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}; stopped without saving it (the last good checkpoint is kept). "
                f"Try a lower optim.optimizer.lr or trainer.gradient_clip_val=1.0")


class EMAWeights(EMAWeightAveraging):
    """Lightning's average of weights and BN statistics: evaluated and saved as state_dict, raw weights resumed too."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Move the module to the run's device first: an average made on the CPU would copy every weight every step."""
        if stage == "fit":
            pl_module.to(trainer.strategy.root_device)
        with warnings.catch_warnings():  # c3exp's configure_model (task.compile) may run early: it compiles once
            warnings.filterwarnings("ignore", message="You're using the WeightAveraging callback with a model that")
            super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Only a resumed fit restores the raw weights: a test of a checkpoint keeps the average of its state_dict."""
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def recipe_callbacks(optim: DictConfig | None) -> list[L.Callback]:
    """The callbacks the optim recipe asks for: the weights' moving average when optim.ema_decay is set."""
    decay = optim.get("ema_decay") if optim is not None else None
    return [] if decay is None else [EMAWeights(decay=float(decay))]


class ReportToTrial(L.Callback):
    """Each epoch's primary metric to its Optuna trial at step = epoch (a resumed run's too); stop it when pruned."""

    def __init__(self) -> None:
        self.trial, self.active = None, False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0 talks to the study; every DDP rank learns whether there is a trial, to stop with it."""
        found = current_trial() if trainer.is_global_zero else None
        self.trial = found[1] if found else None
        self.active = bool(trainer.strategy.broadcast(self.trial is not None, src=0))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        pruned = self.report(pl_module) if self.trial is not None else False
        if trainer.strategy.broadcast(pruned, src=0):  # every rank stops, or the others would wait for rank 0
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {trainer.current_epoch}")

    def report(self, pl_module: L.LightningModule) -> bool:
        """Report the epochs the trial lacks; whether the pruner stops it now."""
        metric = pl_module.primary_metric.name
        reported = self.trial.study.get_trials(deepcopy=False)[self.trial.number].intermediate_values
        for row in pl_module.history:
            if metric in row and int(row["epoch"]) not in reported and math.isfinite(row[metric]):
                self.trial.report(row[metric], int(row["epoch"]))
        return self.trial.should_prune()
