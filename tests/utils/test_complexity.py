"""Parameter and MAC counters (c3exp/utils/complexity.py): per image, part by part, without side effects."""
from __future__ import annotations

import pytest
import torch

from c3exp.utils.complexity import count_macs, count_params, part_costs
from tests.conftest import build

pytestmark = pytest.mark.usefixtures("one_thread")


def test_macs_are_per_image_and_scale_with_the_batch():
    net = build("attn=c3")
    assert count_macs(net, (4, 3, 32, 32)) == 4 * count_macs(net)


def test_part_costs_add_up():
    net = build("model=resnet56", "attn=c3")
    costs = part_costs(net)
    assert [c.name for c in costs] == ["stem", "stage1", "stage2", "stage3", "head"]
    assert sum(c.params for c in costs) == count_params(net)
    assert sum(c.macs for c in costs) == count_macs(net)


def test_count_macs_leaves_the_model_as_it_was():
    net = build("attn=c3").train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_macs(net)
    assert net.training
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])
