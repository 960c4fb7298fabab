"""Squeeze-and-Excitation (c3exp/attention/se.py): its parameter formula and its channel-order dependence."""
from __future__ import annotations

import pytest

from c3exp.attention import SqueezeExcite
from tests.conftest import n_params, permutation_error, randomize


@pytest.mark.parametrize("channels,reduction", [(16, 8), (64, 8), (640, 16)])
def test_se_params(channels, reduction):
    assert n_params(SqueezeExcite(channels, reduction)) == 2 * channels * channels // reduction


def test_se_is_not_channel_permutation_equivariant():
    assert permutation_error(randomize(SqueezeExcite(16, 4)).eval(), 16) > 1e-2
