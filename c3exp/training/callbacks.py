"""Callbacks that make runs reproducible across interruptions, and the average of the weights a recipe may ask for."""
from __future__ import annotations

import os
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig

from c3exp.errors import NonFiniteLossError, check, is_number


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for every (run seed, epoch) pair."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1)


class EpochSeed(L.Callback):
    """Reseed every RNG once per training epoch, before that epoch's data iterator is made.

    The shuffling order and every augmentation of epoch e then depend only on (seed, e): a run resumed
    from the checkpoint of epoch e-1 sees exactly the batches an uninterrupted run would have seen.
    Lightning creates a fit's first iterator before `on_train_epoch_start` (and before it restores the
    epoch counter of a resumed run), as early as `configure_optimizers` where that asks for the run's
    number of steps (`estimated_stepping_batches`: a warm-up, OneCycleLR). So a fit's first epoch is
    seeded at `setup`, and a resumed fit's at `on_load_checkpoint`, from the checkpoint's loop state:
    both come before `configure_optimizers`.
    """

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
            # seed_everything also exports PL_GLOBAL_SEED, from which Lightning seeds the DDP
            # DistributedSampler it builds after this hook (the sampler adds the epoch itself).
            # It must stay the run's seed, or a resumed DDP run would shuffle with another base seed.
            os.environ["PL_GLOBAL_SEED"] = str(self.seed)
            self._seeded_epoch = epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Seeded already by `setup` or `on_load_checkpoint` unless they were skipped: then here, before the data."""
        self._reseed(trainer.current_epoch if self._resumed_epoch is None else self._resumed_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer.current_epoch)


class StopOnNonFiniteLoss(L.Callback):
    """Stop at the first NaN/inf training loss, before it reaches a checkpoint.

    Checkpoints are written only at validation time, so the newest one on disk predates the bad step.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(loss.detach().isfinite().all()):
            raise NonFiniteLossError(
                f"training loss became {float(loss.detach())} at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}; stopped without saving it (the last good checkpoint is kept). "
                f"Try a lower optim.optimizer.lr or trainer.gradient_clip_val=1.0"
            )


class EMAWeights(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights (and BN statistics), updated after every optimiser step.

    The first update copies the weights; each later one makes the average decay x average + (1 - decay) x weights.
    Validation runs with the average, checkpoints store it as their state_dict (so eval and a test of the best
    checkpoint use it) and the raw weights as `current_model_state`; a resumed fit restores both, and the
    test at the end of training has the average (copied in when training ends).
    """

    def __init__(self, decay: float):
        check(is_number(decay) and 0 < decay < 1, "optim.ema_decay", decay,
              "a number between 0 and 1 (e.g. 0.999), or null for no average")
        super().__init__(decay=float(decay))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The average is made where the run trains: Lightning moves the module to its device only after this hook,
        and an average left on the CPU would copy every weight to the host after every step."""
        if stage == "fit":
            pl_module.to(trainer.strategy.root_device)
        with warnings.catch_warnings():  # c3exp's configure_model (model.compile) may run early: it compiles once, in place
            warnings.filterwarnings("ignore", message="You're using the WeightAveraging callback with a model that overrides")
            super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Only a resumed fit restores the raw weights: testing a checkpoint after the fit (test_ckpt=best) keeps
        the average that Lightning loaded from its state_dict."""
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def recipe_callbacks(optim: DictConfig | None) -> list[L.Callback]:
    """The callbacks the optim recipe asks for: the weights' moving average when optim.ema_decay is set."""
    decay = optim.get("ema_decay") if optim is not None else None
    return [] if decay is None else [EMAWeights(decay)]
