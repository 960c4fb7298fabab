"""A run as the report reads it (c3exp/report/runs.py): its validation curve, the experiment it came from, and a
run read from W&B."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from c3exp.report.runs import collect_runs, run_from_results, run_from_wandb
from tests.report.conftest import write_hydra_run


def test_epochs_without_validation_are_left_out_of_the_curve():
    """trainer.check_val_every_n_epoch > 1: history rows of unvalidated epochs carry no val keys."""
    history = [{"epoch": 0, "train/acc1": 0.5}, {"epoch": 1, "train/acc1": 0.6, "val/acc1": 0.7}]
    run = run_from_results({"model": "resnet20", "attn": "c3", "data": "digits", "history": history}, "run")
    assert run.curve == ((1, 0.7),)


def test_the_experiment_is_read_from_hydras_choices(tmp_path):
    """The recipe's name: Hydra's runtime.choices.experiment; none where the folder has no readable hydra.yaml."""
    write_hydra_run(tmp_path / "paper", ["experiment=paper_cifar100", "attn=c3"], 0.7)
    write_hydra_run(tmp_path / "plain", ["attn=c3"], 0.7)
    write_hydra_run(tmp_path / "damaged", ["attn=c3"], 0.7)
    (tmp_path / "damaged" / ".hydra" / "hydra.yaml").write_bytes(b"hydra: [unclosed")
    assert {Path(run.source).name: run.experiment for run in collect_runs(tmp_path)} == {
        "paper": "paper_cifar100", "plain": None, "damaged": None}


def test_a_recipe_chosen_apart_from_the_experiment_joins_its_name(tmp_path):
    """recipe=strong on another experiment, or on none, is a recipe of its own; the experiment that picks it is not."""
    write_hydra_run(tmp_path / "strong", ["experiment=strong_cifar100", "attn=c3"], 0.7)
    write_hydra_run(tmp_path / "quick", ["experiment=quickstart", "recipe=strong", "attn=c3"], 0.7)
    write_hydra_run(tmp_path / "bare", ["recipe=strong", "attn=c3"], 0.7)
    write_hydra_run(tmp_path / "paper", ["recipe=paper", "attn=c3"], 0.7)
    assert {Path(run.source).name: run.experiment for run in collect_runs(tmp_path)} == {
        "strong": "strong_cifar100", "quick": "quickstart recipe=strong", "bare": "recipe=strong", "paper": None}


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


@pytest.mark.slow
def test_the_run_folders_the_report_tests_write_are_what_a_real_run_writes(tmp_path):
    """tests/report/conftest.py's write_hydra_run against `python -m c3exp` itself: the same .hydra files (the
    composed config word for word), results.json's keys in train.py's order, and the same Run read from both."""
    overrides = ["experiment=quickstart", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false"]
    real, fake = tmp_path / "real", tmp_path / "fake"
    done = subprocess.run([sys.executable, "-m", "c3exp", *overrides, f"hydra.run.dir={real}"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    write_hydra_run(fake, overrides, 0.5)
    assert sorted(path.name for path in (real / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        ours = (fake / ".hydra" / name).read_text().replace(str(fake), str(real))
        assert ours == (real / ".hydra" / name).read_text(), name
    theirs, ours = (json.loads((folder / "results.json").read_text()) for folder in (real, fake))
    assert list(ours) == list(theirs) and list(ours["history"][0]) == list(theirs["history"][0])
    fields = ("task", "primary", "model", "attn", "data", "seed", "recipe", "experiment", "debug")
    real_run, fake_run = (collect_runs(folder)[0] for folder in (real, fake))
    assert [getattr(fake_run, field) for field in fields] == [getattr(real_run, field) for field in fields]
    assert real_run.experiment == "quickstart"
