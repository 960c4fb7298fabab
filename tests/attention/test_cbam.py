"""CBAM (c3exp/attention/cbam.py): its parameter formula and its channel-order dependence."""
from __future__ import annotations

import pytest

from c3exp.attention import CBAM
from tests.conftest import n_params, permutation_error, randomize


@pytest.mark.parametrize("channels,reduction", [(16, 16), (64, 16), (256, 8)])
def test_cbam_params(channels, reduction):
    hidden = channels // reduction
    assert n_params(CBAM(channels, reduction, kernel_size=7)) == 2 * channels * hidden + hidden + channels + 2 * 49 + 2


def test_cbam_is_not_channel_permutation_equivariant():
    assert permutation_error(randomize(CBAM(16, 4, kernel_size=7)).eval(), 16) > 1e-2
