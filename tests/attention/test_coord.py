"""Coordinate attention (c3exp/attention/coord.py) against a naive float64 transcription of the paper's equations;
its closed-form parameter count; bad options; its dependence on channel order."""
from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.attention import create_attn
from c3exp.attention.coord import CoordAttention
from c3exp.errors import ConfigError
from c3exp.paths import config_dir
from tests.conftest import assert_gradients_match_reference, assert_matches_reference, n_params, permutation_error, randomize

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# A deliberately naive coordinate attention, straight from the paper's equations: python loops, float64.


def sigmoid(v: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-v))


def h_swish(v: torch.Tensor) -> torch.Tensor:
    return v * torch.clamp(v + 3, 0, 6) / 6


class NaiveCoord:
    """z^h_c(i) = 1/W sum_j x_c(i, j), z^w_c(j) = 1/H sum_i x_c(i, j); f = h_swish(BN(F1([z^h, z^w]))) over the
    H + W positions; g^h = sigmoid(F_h(f^h)), g^w = sigmoid(F_w(f^w)); y_c(i, j) = x_c(i, j) g^h_c(i) g^w_c(j).

    Loops over samples, channels, hidden units and positions. BN in training mode normalises each hidden unit with
    the mean and biased variance of its N * (H + W) values, as BatchNorm2d over the concatenated positions does.
    Takes a CoordAttention block's weights.
    """

    def __init__(self, block: CoordAttention):
        self.block = block

    def batch_norm(self, f: list[list[list[torch.Tensor]]]) -> list[list[list[torch.Tensor]]]:
        bn = self.block.bn
        out = [[[] for _ in row] for row in f]
        for m in range(len(f[0])):
            values = [v for sample in f for v in sample[m]]
            if bn.training:
                mean = sum(values) / len(values)
                var = sum((v - mean) ** 2 for v in values) / len(values)
            else:
                mean, var = bn.running_mean[m], bn.running_var[m]
            for n, sample in enumerate(f):
                out[n][m] = [(v - mean) / torch.sqrt(var + bn.eps) * bn.weight[m] + bn.bias[m] for v in sample[m]]
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        conv, conv_h, conv_w = self.block.conv, self.block.conv_h, self.block.conv_w
        hidden = conv.out_channels
        # z[n][c]: the H row means (pooled along the width), then the W column means (pooled along the height)
        z = [
            [
                [sum(x[n, c, i, j] for j in range(width)) / width for i in range(height)]
                + [sum(x[n, c, i, j] for i in range(height)) / height for j in range(width)]
                for c in range(channels)
            ]
            for n in range(batch)
        ]
        f = [
            [
                [sum(conv.weight[m, c, 0, 0] * z[n][c][p] for c in range(channels)) + conv.bias[m] for p in range(height + width)]
                for m in range(hidden)
            ]
            for n in range(batch)
        ]
        f = [[[h_swish(v) for v in unit] for unit in sample] for sample in self.batch_norm(f)]
        out = torch.zeros_like(x)
        for n in range(batch):
            for c in range(channels):
                g_h = [sigmoid(sum(conv_h.weight[c, m, 0, 0] * f[n][m][i] for m in range(hidden)) + conv_h.bias[c]) for i in range(height)]
                g_w = [sigmoid(sum(conv_w.weight[c, m, 0, 0] * f[n][m][height + j] for m in range(hidden)) + conv_w.bias[c]) for j in range(width)]
                for i in range(height):
                    for j in range(width):
                        out[n, c, i, j] = x[n, c, i, j] * g_h[i] * g_w[j]
        return out


CASES = {
    "C=8, paper reduction (M=8)": {"channels": 8, "reduction": 32, "shape": (5, 6)},
    "C=16, M=8 < C": {"channels": 16, "reduction": 2, "shape": (3, 4)},
    "C=4, M=8 > C": {"channels": 4, "reduction": 1, "shape": (4, 3)},
}


def case(name: str, seed: int) -> tuple[CoordAttention, torch.Tensor]:
    spec = CASES[name]
    block = randomize(CoordAttention(spec["channels"], spec["reduction"])).double()
    x = torch.randn(2, spec["channels"], *spec["shape"], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return block, x


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", CASES)
def test_coord_matches_naive_equations(name: str, training: bool):
    block, x = case(name, seed=1)
    block.train(training)
    assert_matches_reference(block, NaiveCoord(block), x)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_coord_gradients_match_naive_equations(training: bool):
    block, x = case("C=8, paper reduction (M=8)", seed=2)
    block.train(training)
    x.requires_grad_()
    assert_gradients_match_reference(block, NaiveCoord(block), x)


# ----------------------------------------------------------------------------------------------
# Sizes: M = max(8, C // r); (CM + M) + 2M + 2(MC + C) = 3CM + 3M + 2C.


@pytest.mark.parametrize("channels", [4, 16, 64, 256, 300, 2048])
@pytest.mark.parametrize("reduction", [1, 8, 32])
def test_coord_params_closed_form(channels: int, reduction: int):
    hidden = max(8, channels // reduction)
    block = CoordAttention(channels, reduction)
    assert block.conv.out_channels == hidden
    assert n_params(block) == 3 * channels * hidden + 3 * hidden + 2 * channels


# ----------------------------------------------------------------------------------------------
# Settings.


@pytest.mark.parametrize("reduction", [0, -32, 2.5, 32.0, True, "32", None])
def test_coord_rejects_bad_reduction_by_key(reduction):
    with pytest.raises(ConfigError) as error:
        create_attn("coord", 64, reduction=reduction)
    assert error.value.key == "attn.options.reduction" and "\n" not in str(error.value)


def test_coord_config_holds_the_papers_defaults():
    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "attn" / "coord.yaml"))
    options = [name for name in inspect.signature(CoordAttention).parameters if name != "channels"]
    assert node == {"_target_": "c3exp.attention.coord.CoordAttention", "name": "coord", "placement": "every_block", "stages": None, "at": None, "options": {"reduction": 32}}
    assert list(node["options"]) == options  # every option the block takes, in its order


# ----------------------------------------------------------------------------------------------
# Symmetry: the dense 1x1 convolutions read channels by index, so coordinate attention is not
# channel-permutation equivariant (as SE and CBAM, unlike C3).


def test_coord_is_not_channel_permutation_equivariant():
    assert permutation_error(randomize(CoordAttention(16, 32)).eval(), 16) > 1e-2
