"""The ResNet interface every backbone shares (c3exp/models/base.py)."""
from __future__ import annotations

import pytest

from tests.conftest import build


def test_stage_channels_is_read_only():
    with pytest.raises(AttributeError):
        build("model=resnet20").stage_channels = (1, 2, 3)
