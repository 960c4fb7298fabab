"""SimAM (c3exp/attention/simam.py) against a naive float64 transcription of the paper's energy, its zero
parameters, its option check and its channel-permutation equivariance."""
from __future__ import annotations

import math

import pytest
import torch

from c3exp.attention import create_attn
from c3exp.attention.simam import SimAM
from c3exp.errors import ConfigError
from tests.conftest import attention_block, n_params, permutation_error

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_simam(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """The paper's Eq. (4)-(5) with explicit loops over samples, channels and positions.

    For each channel: mu = the mean of its M = H*W values, sigma^2 = sum (x - mu)^2 / (M - 1), and each
    value's inverse minimal energy 1/e* = (x - mu)^2 / (4 (sigma^2 + lambda)) + 1/2 gates it by its sigmoid.
    """
    batch, channels, height, width = x.shape
    positions = [(i, j) for i in range(height) for j in range(width)]
    out = torch.empty_like(x)
    for b in range(batch):
        for c in range(channels):
            mu = sum(x[b, c, i, j] for i, j in positions) / len(positions)
            variance = sum((x[b, c, i, j] - mu) ** 2 for i, j in positions) / (len(positions) - 1)
            for i, j in positions:
                inverse_energy = (x[b, c, i, j] - mu) ** 2 / (4 * (variance + e_lambda)) + 0.5
                out[b, c, i, j] = x[b, c, i, j] / (1 + torch.exp(-inverse_energy))
    return out


def test_simam_matches_naive_equations():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    block = SimAM(3, e_lambda=0.3)
    for training in (True, False):  # no state: the same function in both modes
        torch.testing.assert_close(block.train(training)(x), naive_simam(x, 0.3), rtol=1e-9, atol=1e-12)


def test_simam_configs_lambda_and_wider_maps_match_naive_equations():
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(attention_block("simam", 8)(x), naive_simam(x, 1e-4), rtol=1e-9, atol=1e-12)


def test_simam_input_gradient_matches_naive_equations():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    weight = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (expected,) = torch.autograd.grad((naive_simam(x, 0.3) * weight).sum(), x)
    (actual,) = torch.autograd.grad((SimAM(3, e_lambda=0.3)(x) * weight).sum(), x)
    torch.testing.assert_close(actual, expected, rtol=1e-8, atol=1e-12)


def test_simam_one_pixel_maps_give_the_limit_not_nans():
    x = torch.randn(2, 4, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(SimAM(4, e_lambda=1e-4)(x), x * torch.sigmoid(torch.tensor(0.5, dtype=torch.float64)))


@pytest.mark.parametrize("channels", [8, 64, 640])
def test_simam_has_no_parameters(channels):
    assert n_params(SimAM(channels, e_lambda=1e-4)) == 0


@pytest.mark.parametrize("e_lambda", [0, -1e-4, "1e-4", True, math.nan])
def test_simam_rejects_bad_lambda_by_key(e_lambda):
    with pytest.raises(ConfigError) as error:
        create_attn("simam", 8, e_lambda=e_lambda)
    assert error.value.key == "attn.options.e_lambda" and "\n" not in str(error.value)


def test_simam_is_channel_permutation_equivariant():
    assert permutation_error(SimAM(16, e_lambda=1e-4), 16) < 1e-6
