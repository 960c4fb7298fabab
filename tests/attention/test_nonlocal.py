"""The non-local block (c3exp/attention/nonlocal_block.py) against a naive float64 transcription of the paper's
embedded-Gaussian equations; its identity start, closed-form parameter count, option checks and channel-order
dependence."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from c3exp.attention.nonlocal_block import NonLocalBlock
from c3exp.errors import ConfigError
from tests.conftest import (assert_gradients_match_reference, assert_matches_reference, attention_block, float64_maps, n_params,
                            permutation_error, randomize)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# A deliberately naive non-local block: loops over channels, embedding channels and positions.


class NaiveNonLocal:
    """z = x + BN(W y), y_i = sum_j f(x_i, x_j) g(x_j) / sum_j f(x_i, x_j), f(x_i, x_j) = exp(theta(x_i) . phi(x_j)).

    theta, phi, g and W are 1 x 1 convolutions: sums over input channels of weight * map, plus the bias.
    With sub_sample, phi and g are max-pooled over 2 x 2 windows ({2a, 2a + 1} x {2b, 2b + 1}, clipped to
    the map); with scale, theta . phi is divided by sqrt(C'). BN uses the batch statistics in training,
    the running ones in eval.
    """

    def __init__(self, block: NonLocalBlock):
        self.block = block

    @staticmethod
    def conv1x1(conv: nn.Conv2d, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [sum(conv.weight[k, c, 0, 0] * maps[c] for c in range(len(maps))) + conv.bias[k] for k in range(conv.out_channels)]

    @staticmethod
    def max_pool(m: torch.Tensor) -> torch.Tensor:
        height, width = m.shape[1:]
        rows, cols = (height + 1) // 2, (width + 1) // 2
        cells = []
        for a in range(rows):
            for b in range(cols):
                members = [m[:, i, j] for i in (2 * a, 2 * a + 1) for j in (2 * b, 2 * b + 1) if i < height and j < width]
                largest = members[0]
                for value in members[1:]:
                    largest = torch.maximum(largest, value)
                cells.append(largest)
        return torch.stack(cells, 1).reshape(m.shape[0], rows, cols)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        block = self.block
        batch, channels, height, width = x.shape
        maps = [x[:, c] for c in range(channels)]  # (N, H, W) each
        theta = [m.reshape(batch, -1) for m in self.conv1x1(block.theta, maps)]  # (N, HW) per embedding channel
        phi, g = self.conv1x1(block.phi, maps), self.conv1x1(block.g, maps)
        if block.sub_sample:
            phi, g = [self.max_pool(m) for m in phi], [self.max_pool(m) for m in g]
        phi, g = [m.reshape(batch, -1) for m in phi], [m.reshape(batch, -1) for m in g]
        inner = len(theta)
        score = sum(theta[k][:, :, None] * phi[k][:, None, :] for k in range(inner))  # (N, i, j)
        if block.scale:
            score = score / inner**0.5
        f = torch.exp(score)
        f = f / f.sum(dim=2, keepdim=True)
        y = [sum(f[:, :, j] * g[k][:, j, None] for j in range(g[k].shape[1])) for k in range(inner)]  # (N, HW) each
        z = self.conv1x1(block.out, y)
        bn = block.bn
        out = []
        for c in range(channels):
            if bn.training:
                mean = z[c].sum() / z[c].numel()
                var = ((z[c] - mean) ** 2).sum() / z[c].numel()
            else:
                mean, var = bn.running_mean[c], bn.running_var[c]
            normalised = (z[c] - mean) / torch.sqrt(var + bn.eps) * bn.weight[c] + bn.bias[c]
            out.append(maps[c] + normalised.reshape(batch, height, width))
        return torch.stack(out, 1)


PAPER = dict(reduction=2, sub_sample=False, scale=False)
VARIANTS = {
    "paper": dict(),
    "sub_sample": dict(sub_sample=True),
    "scale": dict(scale=True),
    "sub_sample + scale": dict(sub_sample=True, scale=True),
    "reduction 4": dict(reduction=4),
}


def make_nonlocal(**options) -> NonLocalBlock:
    block = randomize(NonLocalBlock(8, **{**PAPER, **options})).double()
    assert block.bn.weight.abs().min() > 0  # the zero-initialised BN scale is random now: W y counts
    return block


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_nonlocal_matches_naive_equations(variant: str, training: bool):
    block = make_nonlocal(**VARIANTS[variant]).train(training)
    x = float64_maps(1)
    assert_matches_reference(block, NaiveNonLocal(block), x)


@pytest.mark.parametrize("variant", ["paper", "sub_sample + scale"])
def test_nonlocal_gradients_match_naive_equations(variant: str):
    block = make_nonlocal(**VARIANTS[variant])
    x = float64_maps(2).requires_grad_()
    weight = float64_maps(3)
    grads = assert_gradients_match_reference(block, NaiveNonLocal(block), x, weight)
    assert len(grads) == 1 + 4 * 2 + 2  # theta, phi, g, W: weight and bias; BN: weight and bias


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_nonlocal_starts_as_the_identity(training: bool):
    """The paper initialises the BN after W with a zero scale (official BN_INIT_GAMMA = 0)."""
    block = NonLocalBlock(8, 2, sub_sample=True, scale=False).train(training)
    assert not block.bn.weight.any() and not block.bn.bias.any()
    assert all(not conv.bias.any() for conv in (block.theta, block.phi, block.g, block.out))
    x = torch.randn(2, 8, 5, 6)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 8, 1, 7), (1, 8, 3, 3), (2, 8, 8, 8)])
def test_nonlocal_keeps_any_shape(shape):
    x = torch.randn(*shape)
    for sub_sample in (False, True):
        assert randomize(NonLocalBlock(8, 2, sub_sample=sub_sample, scale=False))(x).shape == x.shape


@pytest.mark.parametrize("channels", [8, 64, 256])
@pytest.mark.parametrize("reduction", [1, 2, 4])
def test_nonlocal_params(channels: int, reduction: int):
    inner = channels // reduction
    expected = 4 * channels * inner + 3 * inner + 3 * channels
    for sub_sample in (False, True):
        assert n_params(NonLocalBlock(channels, reduction, sub_sample=sub_sample, scale=False)) == expected


def test_nonlocal_params_at_the_papers_reduction():
    assert [n_params(attention_block("nonlocal", c)) for c in (64, 512, 1024)] == [2 * c * c + 9 * c // 2 for c in (64, 512, 1024)]


@pytest.mark.parametrize(
    "options,key",
    [
        (dict(reduction=3), "attn.options.reduction"),
        (dict(reduction=0), "attn.options.reduction"),
        (dict(reduction=16), "attn.options.reduction"),  # more than the 8 channels
        (dict(sub_sample="no"), "attn.options.sub_sample"),
        (dict(scale=1), "attn.options.scale"),
    ],
)
def test_nonlocal_rejects_bad_options_by_key(options, key):
    with pytest.raises(ConfigError) as error:
        attention_block("nonlocal", 8, **options)
    assert error.value.key == key and "\n" not in str(error.value)


def test_nonlocal_is_not_channel_permutation_equivariant():
    """theta, phi, g and W mix the channels."""
    assert permutation_error(randomize(NonLocalBlock(16, **PAPER)).eval(), 16) > 1e-2
