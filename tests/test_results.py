"""What a run's results.json says (c3exp/results.py): the primary metric, best and final values, old files."""
from __future__ import annotations

import pytest

from c3exp.errors import ConfigError
from c3exp.results import PrimaryMetric, primary_value, summarise_history
from tests.conftest import assert_names_bad_setting


@pytest.mark.parametrize("key, value, specific", [
    ("name", "acc1", "a validation metric logged by the task"),
    ("mode", "biggest", "max, min"),
])
def test_a_bad_primary_metric_declaration_is_one_line(key, value, specific):
    declared = {"name": "val/acc1", "mode": "max", key: value}
    with pytest.raises(ConfigError) as error:
        PrimaryMetric.of(declared)
    assert_names_bad_setting(str(error.value), f"task.primary_metric.{key}", value)
    assert specific in error.value.allowed


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
