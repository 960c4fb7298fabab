"""flatten and config_value (c3exp/utils/mappings.py): nested mappings as the dotted keys an override names."""
from __future__ import annotations

from c3exp.utils.mappings import config_value, flatten


def test_nested_mappings_become_dotted_keys_with_lists_and_empty_mappings_as_leaves():
    tree = {"optim": {"optimizer": {"lr": 0.1}, "milestones": [120, 140]}, "attn": {"options": {}}, "seed": 0}
    assert flatten(tree) == {"optim.optimizer.lr": 0.1, "optim.milestones": [120, 140], "attn.options": {}, "seed": 0}
    assert flatten({"lr": 0.1, "none": None}, "optim.") == {"optim.lr": 0.1, "optim.none": None}
    assert flatten(5, "seed.") == {"seed": 5} and flatten({}) == {} and flatten(None) == {}


def test_a_dotted_key_is_read_nested_or_flattened_with_dots_or_slashes():
    nested = {"task": {"primary_metric": {"name": "val/miou"}}, "seed": 3}
    assert config_value(nested, "task.primary_metric.name") == "val/miou" and config_value(nested, "seed") == 3
    assert config_value({"task.name": "detection"}, "task.name") == "detection"  # flattened with dots
    assert config_value({"task/name": "detection"}, "task.name") == "detection"  # W&B's flattening
    assert config_value(nested, "task.primary_metric.mode") is None and config_value(nested, "seed.value") is None
