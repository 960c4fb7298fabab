"""The training callbacks (c3exp/training/callbacks.py): EpochSeed, whose randomness depends only on (seed, epoch),
fresh or resumed, one process or DDP; and the stop on a non-finite loss."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from torch.utils.data import DataLoader, TensorDataset

from c3exp.config import check_command_line
from c3exp.errors import NonFiniteLossError
from c3exp.tasks import ClassificationModule
from c3exp.train import train
from c3exp.training.callbacks import EpochSeed, epoch_seed
from tests.conftest import TINY_DIGITS, run_config


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


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    first = train(run_config(TINY_DIGITS + ["trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                            "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"], tmp_path))
    last = Path(first["checkpoints"]["last"])
    before = (last.stat().st_mtime_ns, torch.load(last, weights_only=False)["epoch"])

    original = ClassificationModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch == 1 and batch_idx == 1 else loss

    monkeypatch.setattr(ClassificationModule, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1") as error:
        train(run_config(TINY_DIGITS + ["trainer.max_epochs=3", "trainer.limit_train_batches=3",
                                        "trainer.limit_val_batches=2", "resume=auto"], tmp_path))
    suggested = re.findall(r"\b((?:optim|trainer)\.[\w.]*\w)(=[\d.]+)?", str(error.value))
    assert [key for key, _ in suggested] == ["optim.optimizer.lr", "trainer.gradient_clip_val"]
    for key, value in suggested:  # what the message suggests is a setting the command line takes
        check_command_line([f"{key}{value or '=0.05'}"])
    assert (last.stat().st_mtime_ns, torch.load(last, weights_only=False)["epoch"]) == before
