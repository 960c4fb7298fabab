"""DeepLab heads (c3exp/models/heads.py): the paper's ASPP, its initialisation, the head registry."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from c3exp.errors import ConfigError
from c3exp.models.heads import HEADS, DeepLabV2Head, create_head

pytestmark = pytest.mark.usefixtures("one_thread")


CLASSES = 5


# ----------------------------------------------------------------------------------------------
# DeepLabv2's ASPP: four dilated 3x3 convolutions to class scores, summed.


def test_deeplabv2_head_has_the_paper_s_four_branches():
    head = DeepLabV2Head(8, CLASSES)
    assert len(head.branches) == 4
    assert [(c.dilation, c.padding) for c in head.branches] == [((r, r), (r, r)) for r in (6, 12, 18, 24)]
    assert all(c.kernel_size == (3, 3) and c.bias is not None for c in head.branches)
    assert sum(p.numel() for p in head.parameters()) == 4 * (8 * CLASSES * 9 + CLASSES)


def test_deeplabv2_head_sums_its_branches_and_keeps_the_size():
    torch.manual_seed(0)
    head = DeepLabV2Head(8, CLASSES)
    x = torch.randn(2, 8, 11, 13)
    expected = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(head.branches, (6, 12, 18, 24)))
    out = head(x)
    assert out.shape == (2, CLASSES, 11, 13)
    torch.testing.assert_close(out, expected)


def test_deeplabv2_head_is_initialised_as_deeplab():
    torch.manual_seed(0)
    head = DeepLabV2Head(64, 21)
    for conv in head.branches:
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert conv.weight.mean().abs().item() < 1e-3 and (conv.bias == 0).all()


def test_deeplabv2_rates_are_an_option():
    head = create_head("deeplabv2", 8, CLASSES, rates=[1, 2])
    assert [c.dilation[0] for c in head.branches] == [1, 2]
    with pytest.raises(ConfigError) as error:
        create_head("deeplabv2", 8, CLASSES, rates=[6, 0])
    assert error.value.key == "task.net.head_options.rates"


def test_registry_and_its_errors():
    assert isinstance(create_head("deeplabv3", 16, CLASSES), DeepLabHead)
    with pytest.raises(ConfigError) as error:
        create_head("pspnet", 16, CLASSES)
    message = str(error.value)
    assert error.value.key == "task.net.head" and all(name in message for name in HEADS) and "\n" not in message
    with pytest.raises(ConfigError) as error:
        create_head("deeplabv2", 16, CLASSES, dilations=[6])
    assert error.value.key == "task.net.head_options.dilations"
