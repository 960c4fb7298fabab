"""A run as the report reads it (c3exp/report/runs.py): its validation curve."""
from __future__ import annotations

from c3exp.report.runs import run_from_results


def test_epochs_without_validation_are_left_out_of_the_curve():
    """trainer.check_val_every_n_epoch > 1: history rows of unvalidated epochs carry no val keys."""
    history = [{"epoch": 0, "train/acc1": 0.5}, {"epoch": 1, "train/acc1": 0.6, "val/acc1": 0.7}]
    run = run_from_results({"model": "resnet20", "attn": "c3", "data": "digits", "history": history}, "run")
    assert run.curve == ((1, 0.7),)
