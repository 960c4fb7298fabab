"""Tasks as plug-ins: the task config group, the primary-metric declaration, and a task written here.

`ParityTask` lives in this test module only: it is run by train(), chosen by a checkpoint, summarised
in results.json and re-tested by eval with config overrides alone, which is the plug-in claim.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torchmetrics import MeanSquaredError, MetricCollection

import c3exp
from c3exp.errors import ConfigError
from c3exp.eval import evaluate
from c3exp.results import PrimaryMetric, primary_value, summarise_history
from c3exp.tasks import ClassificationModule, TaskModule, build_task
from c3exp.train import train
from tests.conftest import TINY_DIGITS, run_config

PARITY = [
    "task._target_=tests.test_tasks.ParityTask",
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
    metrics = evaluate(parity_run["checkpoints"]["last"])
    assert metrics["test/brier"] == pytest.approx(parity_run["test_brier"], abs=1e-6)


def test_the_default_task_is_classification_with_val_acc1():
    cfg = c3exp.compose(["data=digits"])
    assert cfg.task.name == "classification" and cfg.task.primary_metric.name == "val/acc1"
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc1" and cfg.callbacks.model_checkpoint.mode == "max"


def test_the_checkpoint_monitor_follows_the_task():
    cfg = c3exp.compose(["data=digits", "task=segmentation"])
    assert cfg.callbacks.model_checkpoint.monitor == "val/miou"


def test_a_primary_metric_the_task_does_not_log_is_one_line():
    cfg = run_config(TINY_DIGITS + ["task.primary_metric.name=val/miou"], Path("/tmp/unused"))
    with pytest.raises(ConfigError, match=r"task.primary_metric.name='val/miou' is not valid: expected one of val/acc1, val/acc5"):
        build_task(cfg)


@pytest.mark.parametrize("key, value, expected", [
    ("name", "acc1", "a validation metric"),
    ("mode", "biggest", "one of max, min"),
])
def test_a_bad_primary_metric_declaration_is_one_line(key, value, expected):
    declared = {"name": "val/acc1", "mode": "max", key: value}
    with pytest.raises(ConfigError, match=f"task.primary_metric.{key}={value!r} is not valid: expected {expected}"):
        PrimaryMetric.of(declared)


def test_summary_takes_the_best_epoch_by_the_primary_metric_and_each_metric_by_its_own_mode():
    history = [
        {"epoch": 0, "val/loss_rate": 0.5, "val/acc": 0.7},
        {"epoch": 1, "val/loss_rate": 0.2, "val/acc": 0.6},
        {"epoch": 2, "val/loss_rate": 0.4, "val/acc": 0.8},
    ]
    summary = summarise_history(history, PrimaryMetric("val/loss_rate", "min"), {"loss_rate": "min", "acc": "max"})
    assert summary["best_epoch"] == 1 and summary["best_val_loss_rate"] == 0.2
    assert summary["best_val_acc"] == 0.8 and summary["final_val_acc"] == 0.8 and summary["final_val_loss_rate"] == 0.4


def test_results_from_before_tasks_read_as_classification():
    assert primary_value({"best_val_acc1": 0.9}) == 0.9


def test_build_model_gives_the_task_network():
    cfg = c3exp.compose(["data=digits", "model=resnet20", "attn=c3"])
    module = build_task(cfg, run_config={})
    assert isinstance(module, ClassificationModule)
    assert [name for name, _ in c3exp.build_model(cfg).named_parameters()] == [n for n, _ in module.net.named_parameters()]


def test_resume_and_eval_build_without_downloading_pretrained_weights():
    from c3exp.models import without_pretrained

    cfg = c3exp.compose(["model=resnet18", "model.weights=imagenet", "data=digits"])
    assert without_pretrained(cfg).model.weights is None and cfg.model.weights == "imagenet"
    plain = c3exp.compose(["model=resnet20", "data=digits"])
    assert without_pretrained(plain) is plain
