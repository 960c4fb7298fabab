"""TaskModule (c3exp/tasks/base.py) and build_task (c3exp/tasks/__init__.py): tasks as plug-ins, the epoch log line,
the run times a checkpoint carries, the optimiser: warm-up composed with the schedule, Nesterov.

`ParityTask` lives in this test module only: it is run by train(), chosen by a checkpoint, summarised
in results.json and re-tested by eval with config overrides alone, which is the plug-in claim.
"""
from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanSquaredError, MetricCollection

import c3exp
from c3exp.config import group_choices, validate_config
from c3exp.errors import ConfigError
from c3exp.cli.eval import evaluate
from c3exp.paths import config_dir
from c3exp.results import PrimaryMetric, primary_value
from c3exp.tasks import ClassificationModule, TaskModule, build_task
from c3exp.training.train import train
from tests.conftest import SHORT_RUN, TINY_DIGITS, assert_names_bad_setting, run_config


PARITY = [
    "task._target_=tests.tasks.test_base.ParityTask",
    "task.name=parity",
    "task.primary_metric.name=val/brier",
    "task.primary_metric.mode=min",
]


SHORT = TINY_DIGITS + ["model=resnet20", "attn=se", "trainer.max_epochs=3", "trainer.limit_train_batches=4",
                       "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


class ParityTask(TaskModule):
    """Is the digit even? The 10-way network's logits pooled into even/odd; judged by the Brier score (lower is better)."""

    metric_modes: ClassVar[dict[str, str]] = {"brier": "min"}
    default_primary: ClassVar[PrimaryMetric] = PrimaryMetric("val/brier", "min")

    def make_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"brier": MeanSquaredError()}, prefix=prefix)

    def model_step(self, batch):
        images, labels = batch
        logits = self(images)
        even = torch.logsumexp(logits[:, 0::2], dim=1) - torch.logsumexp(logits[:, 1::2], dim=1)
        target = (labels % 2 == 0).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(even, target)
        return loss, torch.sigmoid(even.detach()), target, len(labels)


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory) -> dict:
    return train(run_config(SHORT + PARITY, tmp_path_factory.mktemp("parity")))


def test_a_task_defined_outside_the_package_trains_with_its_own_primary_metric(parity_run):
    on_disk = json.loads((Path(parity_run["run_dir"]) / "results.json").read_text())
    briers = [row["val/brier"] for row in on_disk["history"]]
    assert on_disk["task"] == "parity" and on_disk["primary_metric"] == {"name": "val/brier", "mode": "min"}
    assert len(set(briers)) > 1  # the metric moved, so min vs max matters
    assert on_disk["best_val_brier"] == min(briers) and on_disk["final_val_brier"] == briers[-1]
    assert briers[on_disk["best_epoch"]] == min(briers)
    assert primary_value(on_disk) == min(briers)
    assert "test_brier" in on_disk and "test_acc1" not in on_disk
    best = Path(on_disk["checkpoints"]["best"])
    assert torch.load(best, weights_only=False)["epoch"] == on_disk["best_epoch"]  # the checkpoint monitor minimised


def test_eval_rebuilds_a_plugged_in_task_from_its_checkpoint(parity_run):
    # the checkpoint alone never names code: the user vouches for the plug-in's target on the command line
    metrics = evaluate(parity_run["checkpoints"]["last"], [PARITY[0]])
    assert metrics["test/brier"] == pytest.approx(parity_run["test_brier"], abs=1e-6)


@pytest.mark.parametrize("key, value, allowed", [
    ("task.primary_metric.name", "val/miou", "val/acc1, val/acc5"),  # a metric the task does not log
    ("task._target_", "torch.nn.Identity", "c3exp.tasks.base.TaskModule"),  # no task module
])
def test_a_task_setting_it_cannot_take_is_one_line(key, value, allowed):
    cfg = run_config(TINY_DIGITS + [f"{key}={value}"], Path("/tmp/unused"))
    with pytest.raises(ConfigError) as error:
        build_task(cfg)
    assert_names_bad_setting(str(error.value), key, value)
    assert allowed in error.value.allowed


def test_build_model_gives_the_task_network():
    cfg = c3exp.compose(["data=digits", "model=resnet20", "attn=c3"])
    module = build_task(cfg, run_config={})
    assert isinstance(module, ClassificationModule)
    assert [name for name, _ in c3exp.build_network(cfg).named_parameters()] == [n for n, _ in module.net.named_parameters()]


def test_every_epoch_is_one_line_in_the_log(tmp_path, caplog):
    """Progress where there is no progress bar (train.log, nohup, SLURM's output files)."""
    args = TINY_DIGITS + ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                          "trainer.limit_test_batches=1"]
    with caplog.at_level(logging.INFO, logger="c3exp.tasks.base"):
        results = train(run_config(args, tmp_path))
    lines = [record.getMessage() for record in caplog.records if record.name == "c3exp.tasks.base"]
    assert [line.partition(":")[0] for line in lines] == ["epoch 0/1", "epoch 1/1"]  # 0-based, as Lightning's bar
    for line, row in zip(lines, results["history"]):
        assert f"train/loss={row['train/loss']:.4f}" in line and f"val/acc1={row['val/acc1']:.4f}" in line
        assert re.search(r" lr=0\.1 \(\d+\.\d s\)$", line), line


def test_testing_a_checkpoint_leaves_the_run_times_alone():
    """trainer.test(ckpt_path="best") loads an older checkpoint: its history and times are not the run's."""
    from lightning.pytorch.trainer.states import TrainerFn

    from c3exp.tasks import build_task

    cfg = run_config(SHORT_RUN, Path("/tmp/unused"))
    module = build_task(cfg)
    saved = {"c3exp": {"history": [{"epoch": 0, "train/epoch_time": 2.0}, {"epoch": 1, "train/epoch_time": 3.0}],
                       "wall_seconds": 9.0}}
    module.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.history = [{"epoch": 0, "train/epoch_time": 42.0}]
    module.trainer.state.fn = TrainerFn.TESTING
    module.on_load_checkpoint(saved)
    assert module.train_seconds == 42.0 and len(module.history) == 1 and module.wall_seconds_before == 0.0
    module.trainer.state.fn = TrainerFn.FITTING
    module.on_load_checkpoint(saved)
    assert module.train_seconds == 5.0 and module.history == saved["c3exp"]["history"] and module.wall_seconds_before == 9.0


# -- optimisation: warm-up, Nesterov ------------------------------------------------------------------------------
class LearningRates(L.Callback):
    """The learning rate each optimiser step runs with."""

    def __init__(self):
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def learning_rates(scheduler, warmup_epochs: float, epochs: int = 3) -> list[float]:
    """The lr of every step of a fit of `epochs` x 4 batches, SGD at lr 0.1 with `scheduler` stepped every epoch."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 2), torch.randint(0, 3, (16,))), batch_size=4)
    module = ClassificationModule(torch.nn.Linear(2, 3), num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.1),
                                  scheduler=scheduler, warmup_epochs=warmup_epochs, label_smoothing=0.0, tta_flip=False,
                                  primary_metric=None, name="classification", channels_last=False, compile=False,
                                  cuda_graphs=False)
    recorder = LearningRates()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, train_dataloaders=data)
    return recorder.seen


def test_warmup_multiplies_the_step_schedule_by_a_linear_ramp_over_its_steps():
    """1.5 epochs of 4 steps: steps 0..5 at (s + 1)/6 of the lr, whatever the schedule makes of it (x0.1 from epoch 1)."""
    got = learning_rates(partial(MultiStepLR, milestones=[1], gamma=0.1), warmup_epochs=1.5)
    ramp = [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1, 1, 1, 1, 1, 1]
    schedule = [0.1] * 4 + [0.01] * 8
    assert got == pytest.approx([w * lr for w, lr in zip(ramp, schedule)], rel=1e-12)


def test_warmup_times_cosine_annealing_is_the_product_of_both():
    """Cosine to 0 over 3 epochs: (1 + cos(pi e / 3)) / 2 = 1, 3/4, 1/4 in epochs 0, 1, 2, times the ramp."""
    got = learning_rates(partial(CosineAnnealingLR, T_max=3, eta_min=0.0), warmup_epochs=1.5)
    ramp = [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1, 1, 1, 1, 1, 1]
    cosine = [1.0] * 4 + [0.75] * 4 + [0.25] * 4
    assert got == pytest.approx([0.1 * w * c for w, c in zip(ramp, cosine)], rel=1e-12)


def test_a_warmup_within_the_first_epoch_leaves_the_schedule_as_it_was():
    """Half an epoch: steps 0, 1 at 1/2 and all of the lr; from there on cosine to eta_min=0.01, unchanged."""
    got = learning_rates(partial(CosineAnnealingLR, T_max=3, eta_min=0.01), warmup_epochs=0.5)
    cosine = [0.01 + 0.09 * c for c in [1.0] * 4 + [0.75] * 4 + [0.25] * 4]
    assert got == pytest.approx([cosine[0] / 2, *cosine[1:]], rel=1e-12)
    assert learning_rates(partial(CosineAnnealingLR, T_max=3, eta_min=0.01), warmup_epochs=0) == pytest.approx(cosine)


def test_warmup_is_read_from_the_optim_recipe_and_refused_with_onecycle(tmp_path):
    cfg = c3exp.compose(["data=digits", "optim.warmup_epochs=0.5"])
    assert build_task(cfg, run_config={}).warmup_epochs == 0.5
    shared = OmegaConf.load(config_dir() / "optim" / "shared" / "options.yaml")  # every recipe's defaults list has it
    assert shared.warmup_epochs == 0
    for recipe in group_choices("optim"):
        assert build_task(c3exp.compose(["data=digits", f"optim={recipe}"]), run_config={}).warmup_epochs == 0
    with pytest.raises(ConfigError) as error:
        build_task(c3exp.compose(["data=digits", "optim=onecycle", "optim.warmup_epochs=1"]), run_config={})
    assert_names_bad_setting(str(error.value), "optim.warmup_epochs", 1)
    assert "with OneCycleLR" in error.value.allowed
    with pytest.raises(ConfigError) as error:
        validate_config(run_config(["data=digits", "optim.warmup_epochs=-1"], tmp_path))
    assert_names_bad_setting(str(error.value), "optim.warmup_epochs", -1)


@pytest.mark.parametrize("nesterov, factor", [(False, 1.0), (True, 1.9)])
def test_one_sgd_step_of_the_paper_recipe_with_and_without_nesterov(nesterov, factor):
    """The first step's momentum buffer is the gradient g (plus weight decay 1e-4 x w): plain SGD moves w by lr x g,
    Nesterov's by lr x (g + 0.9 g)."""
    cfg = c3exp.compose(["data=digits", f"optim.optimizer.nesterov={str(nesterov).lower()}"])
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(net.weight, 2.0)
    module = build_task(cfg, net=net, run_config={})
    (optimizer,), _ = module.configure_optimizers()
    assert optimizer.defaults["nesterov"] is nesterov
    net(torch.ones(1, 1)).sum().backward()  # gradient 1
    optimizer.step()
    assert net.weight.item() == pytest.approx(2.0 - 0.1 * factor * (1 + 1e-4 * 2.0), rel=1e-7)
