"""Runs read from W&B (c3exp/report/wandb_runs.py): a segmentation run's task, test metrics and curve."""
from __future__ import annotations

from types import SimpleNamespace

from c3exp.report.wandb_runs import run_from_wandb


def test_a_wandb_segmentation_run():
    config = {"task": {"name": "segmentation", "primary_metric": {"name": "val/miou", "mode": "max"}},
              "model": {"name": "resnet101"}, "attn": {"name": "c3"}, "data": {"name": "voc2012"}, "seed": 0}
    summary = {"final/test_miou": 0.75, "test/miou": 0.5, "test/macc": 0.86, "final/test_loss": 0.3,
               "model/params": 42_500_000}
    rows = [{"epoch": 0, "val/miou": None}, {"epoch": 0, "val/miou": 0.7}]
    run = run_from_wandb(SimpleNamespace(config=config, summary=summary, history=lambda keys, pandas: rows, url="u"))
    assert (run.task, run.primary.name) == ("segmentation", "val/miou")
    assert run.test_metrics == {"miou": 0.75, "macc": 0.86}  # final/ before test/; the loss is not a metric
    assert run.curve == ((0, 0.7),)
    unfinished = SimpleNamespace(config=config, summary={"final/test_acc1": 0.9}, history=None, url="u")
    assert run_from_wandb(unfinished) is None  # no test value of its primary metric
