"""Callbacks that make runs reproducible across interruptions."""
from __future__ import annotations

import os

import lightning as L

from c3exp.errors import NonFiniteLossError


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for every (run seed, epoch) pair."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1)


class EpochSeed(L.Callback):
    """Reseed every RNG once per training epoch, before that epoch's data iterator is made.

    The shuffling order and every augmentation of epoch e then depend only on (seed, e): a run resumed
    from the checkpoint of epoch e-1 sees exactly the batches an uninterrupted run would have seen.
    Lightning creates a fit's first iterator before `on_train_epoch_start` (and before it restores the
    epoch counter of a resumed run), so that epoch is seeded at `on_fit_start`, from the checkpoint's
    loop state when resuming.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._seeded_epoch: int | None = None
        self._resumed_epoch: int | None = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """The epoch a resumed fit starts with: the number of epochs the checkpoint had processed."""
        self._resumed_epoch = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]

    def _reseed(self, epoch: int) -> None:
        if epoch != self._seeded_epoch:
            L.seed_everything(epoch_seed(self.seed, epoch), workers=True, verbose=False)
            # seed_everything also exports PL_GLOBAL_SEED, from which Lightning seeds the DDP
            # DistributedSampler it builds after this hook (the sampler adds the epoch itself).
            # It must stay the run's seed, or a resumed DDP run would shuffle with another base seed.
            os.environ["PL_GLOBAL_SEED"] = str(self.seed)
            self._seeded_epoch = epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seeded_epoch = None
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
