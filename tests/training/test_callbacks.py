"""The training callbacks (c3exp/training/callbacks.py): EpochSeed, whose randomness depends only on (seed, epoch),
fresh or resumed, one process or DDP; the stop on a non-finite loss; the weights' moving average (optim.ema_decay)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, TensorDataset

import c3exp
from c3exp.config import check_command_line
from c3exp.data.device import epoch_seed
from c3exp.errors import NonFiniteLossError
from c3exp.tasks import ClassificationModule
from c3exp.training.train import train
from c3exp.training.callbacks import EMAWeights, EpochSeed, recipe_callbacks
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
    resumed.setup(SimpleNamespace(current_epoch=0), None, "fit")
    resumed.on_load_checkpoint(trainer_in(TrainerFn.FITTING), None, CHECKPOINT_OF_EPOCH_3)  # loops not restored yet
    assert torch.initial_seed() == epoch_seed(5, 3)
    assert order(distributed_sampler(), epoch=3) == uninterrupted


CHECKPOINT_OF_EPOCH_3 = {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3}}}}}


def trainer_in(fn: TrainerFn, epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(current_epoch=epoch, state=SimpleNamespace(fn=fn))


def draws_after_seeding(seed: int, count: int) -> list[float]:
    torch.manual_seed(seed)
    return torch.rand(count).tolist()


@pytest.mark.parametrize("resumed", [False, True])
def test_a_fit_is_seeded_before_configure_optimizers_and_not_again_at_its_start(resumed):
    """configure_optimizers may already make the first iterator (a warm-up asks for estimated_stepping_batches): its
    draws and the later ones of the epoch must follow one seeding, as in an uninterrupted run's later epochs."""
    seeder = EpochSeed(seed=5)
    seeder.setup(trainer_in(TrainerFn.FITTING), None, "fit")
    if resumed:
        seeder.on_load_checkpoint(trainer_in(TrainerFn.FITTING), None, CHECKPOINT_OF_EPOCH_3)
    early = torch.rand(1).tolist()  # configure_optimizers' iterator
    seeder.on_fit_start(trainer_in(TrainerFn.FITTING), None)
    seeder.on_train_epoch_start(trainer_in(TrainerFn.FITTING, epoch=3 if resumed else 0), None)
    assert early + torch.rand(1).tolist() == draws_after_seeding(epoch_seed(5, 3 if resumed else 0), 2)


def test_testing_a_checkpoint_leaves_the_random_state_alone():
    seeder = EpochSeed(seed=5)
    torch.manual_seed(123)
    seeder.on_load_checkpoint(trainer_in(TrainerFn.TESTING), None, CHECKPOINT_OF_EPOCH_3)
    assert torch.initial_seed() == 123


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


# -- the weights' moving average ------------------------------------------------------------------------------
class Descent(L.LightningModule):
    """One weight w and the loss w: SGD at lr 0.1 takes w from 1 to 0.9, 0.8, ... (gradient 1 at every step).

    Records the weight each validation and test batch sees.
    """

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.validated: list[float] = []
        self.tested: list[float] = []

    def training_step(self, batch, batch_idx):
        return self.w.sum()

    def validation_step(self, batch, batch_idx):
        self.validated.append(self.w.item())

    def test_step(self, batch, batch_idx):
        self.tested.append(self.w.item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def ema(decay: float, steps: int) -> float:
    """The average after `steps` steps of Descent: the first update copies w, each later one mixes in (1 - decay) of w."""
    average = 0.9
    for k in range(2, steps + 1):
        average = decay * average + (1 - decay) * (1 - 0.1 * k)
    return average


def fit_descent(tmp_path: Path, epochs: int, ckpt_path: str | None = None) -> tuple[L.Trainer, Descent]:
    """Epochs of 5 steps and one validation batch, with the average (decay 0.5) and a checkpoint after every epoch."""
    module = Descent()
    data = DataLoader(TensorDataset(torch.zeros(5, 1)), batch_size=1)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1,
                        callbacks=[EMAWeights(decay=0.5), ModelCheckpoint(dirpath=tmp_path, filename="last")])
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data, ckpt_path=ckpt_path)
    return trainer, module


def test_the_average_follows_the_ema_recursion_and_validation_runs_with_it(tmp_path):
    """decay 0.5: 0.9, 0.85, 0.775, 0.6875, 0.59375 while w goes 0.9 ... 0.5."""
    assert ema(0.5, 5) == pytest.approx(0.59375)
    trainer, module = fit_descent(tmp_path, epochs=1)
    assert module.validated == pytest.approx([ema(0.5, 5)])
    assert module.w.item() == pytest.approx(ema(0.5, 5))  # training ends with the average in the module
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["state_dict"]["w"].item() == pytest.approx(ema(0.5, 5))
    assert checkpoint["current_model_state"]["w"].item() == pytest.approx(0.5)  # the raw weight


def test_testing_a_checkpoint_after_the_fit_tests_its_average(tmp_path):
    """Lightning's callback would load the checkpoint's raw weights into the module when testing it (test_ckpt=best)."""
    trainer, module = fit_descent(tmp_path, epochs=1)
    trainer.test(module, dataloaders=DataLoader(TensorDataset(torch.zeros(1, 1))), ckpt_path=str(tmp_path / "last.ckpt"),
                 verbose=False)
    assert module.tested == pytest.approx([ema(0.5, 5)])


def test_a_resumed_fit_continues_both_the_weights_and_their_average(tmp_path):
    fit_descent(tmp_path, epochs=1)
    _, resumed = fit_descent(tmp_path / "more", epochs=2, ckpt_path=str(tmp_path / "last.ckpt"))
    assert resumed.validated == pytest.approx([ema(0.5, 10)])
    checkpoint = torch.load(tmp_path / "more" / "last.ckpt", weights_only=True)
    assert checkpoint["current_model_state"]["w"].item() == pytest.approx(0.0, abs=1e-6)  # ten steps from 1
    assert checkpoint["state_dict"]["w"].item() == pytest.approx(ema(0.5, 10))


def test_the_optim_recipe_adds_the_average_only_when_asked():
    assert recipe_callbacks(c3exp.compose(["data=digits"]).optim) == []  # every recipe: off by default
    (callback,) = recipe_callbacks(c3exp.compose(["data=digits", "optim=adamw", "optim.ema_decay=0.99"]).optim)
    assert isinstance(callback, EMAWeights)
