"""Callbacks that make runs reproducible across interruptions."""
from __future__ import annotations

import lightning as L


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for every (run seed, epoch) pair."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1)


class EpochSeed(L.Callback):
    """Reseed every RNG at the start of each training epoch, before the epoch's data iterator is made.

    The shuffling order and every augmentation of epoch e then depend only on (seed, e): a run resumed
    from the checkpoint of epoch e-1 sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)
