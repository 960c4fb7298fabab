"""The ResNet interface every backbone shares (c3exp/models/base.py)."""
from __future__ import annotations

import pytest

from c3exp.models import cifar_resnet


def test_stage_channels_is_read_only():
    with pytest.raises(AttributeError):
        cifar_resnet(10).stage_channels = (1, 2, 3)
