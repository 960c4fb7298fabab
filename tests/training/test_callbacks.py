"""EpochSeed: every epoch's randomness depends only on (seed, epoch), fresh or resumed, one process or DDP."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from torch.utils.data import DataLoader, TensorDataset

from c3exp.training.callbacks import EpochSeed, epoch_seed


def distributed_sampler():
    """The DistributedSampler (rank 0 of 2) Lightning would build at this point of a fit."""
    loader = DataLoader(TensorDataset(torch.arange(32)), shuffle=True)
    return _get_distributed_sampler(loader, shuffle=True, overfit_batches=0, num_replicas=2, rank=0)


def order(sampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_resumed_fit_reseeds_its_epoch_and_keeps_the_ddp_sampler_seed(monkeypatch):
    """Lightning builds the sampler once per fit, after on_fit_start: at epoch 0 when uninterrupted,
    at the resumed epoch when resumed. Both must shuffle epoch 3 alike."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    fresh = EpochSeed(seed=5)
    fresh.on_fit_start(SimpleNamespace(current_epoch=0), None)
    uninterrupted_sampler = distributed_sampler()
    fresh.on_train_epoch_start(SimpleNamespace(current_epoch=3), None)
    uninterrupted = order(uninterrupted_sampler, epoch=3)

    resumed = EpochSeed(seed=5)
    resumed.on_load_checkpoint(None, None, {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3}}}}})
    resumed.on_fit_start(SimpleNamespace(current_epoch=0), None)
    assert torch.initial_seed() == epoch_seed(5, 3)
    assert order(distributed_sampler(), epoch=3) == uninterrupted
