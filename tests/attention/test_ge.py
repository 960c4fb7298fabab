"""Gather-Excite (c3exp/attention/ge.py) against a naive float64 transcription of the paper's operators,
GE-θ⁻ and GE-θ; its closed-form parameter count; its option checks; its channel-permutation equivariance."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from c3exp.attention.ge import GatherExcite
from c3exp.errors import ConfigError
from tests.conftest import (assert_gradients_match_reference, assert_matches_reference, attention_block, float64_maps, n_params,
                            permutation_error, randomize)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# A deliberately naive GE: loops over channels, cells and kernel taps, vectors over the batch only.


def from_cells(cells: dict[tuple[int, int, int], torch.Tensor], channels: int, rows: int, cols: int) -> torch.Tensor:
    """A (N, C, rows, cols) map from its cells {(c, a, k): (N,) values}."""
    return torch.stack(
        [torch.stack([torch.stack([cells[c, a, k] for k in range(cols)], -1) for a in range(rows)], -2) for c in range(channels)],
        1,
    )


def sigmoid(z: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-z))


class NaiveGE:
    """out_ij = x_ij * sigmoid(gathered at the cell nearest-neighbour interpolation maps ij to).

    Gather of GE-θ⁻: the mean of the whole map (global extent), or for extent e the mean of the in-map
    cells of the (2e - 1) x (2e - 1) window centred on every e-th position. Gather of GE-θ: log2(e)
    depthwise 3 x 3 convolutions of stride 2 over the zero-padded map, each followed by BN (batch
    statistics in training, running ones in eval), a ReLU between consecutive ones.
    """

    def __init__(self, block: GatherExcite):
        self.block = block

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.block.learned:
            gathered = x
            for layer in self.block.gather:
                if isinstance(layer, nn.Conv2d):
                    gathered = self.depthwise_conv(gathered, layer.weight)
                elif isinstance(layer, nn.BatchNorm2d):
                    gathered = self.batch_norm(gathered, layer)
                else:
                    gathered = torch.where(gathered > 0, gathered, torch.zeros_like(gathered))
        elif self.block.extent == 0:
            gathered = self.window_means(x, 1, 1, lambda a, size: range(size))  # one cell: the whole map
        else:
            e = self.block.extent
            rows, cols = -(-x.shape[2] // e), -(-x.shape[3] // e)  # windows centred on 0, e, 2e, ... inside the map
            gathered = self.window_means(x, rows, cols, lambda a, size: range(max(0, a * e - (e - 1)), min(size, a * e + e)))
        return self.excite(x, gathered)

    @staticmethod
    def window_means(x: torch.Tensor, rows: int, cols: int, window) -> torch.Tensor:
        """The mean of x over window(a, H) x window(k, W) for each cell (a, k) of a rows x cols map."""
        cells = {}
        for c in range(x.shape[1]):
            for a in range(rows):
                for k in range(cols):
                    members = [(i, j) for i in window(a, x.shape[2]) for j in window(k, x.shape[3])]
                    cells[c, a, k] = sum(x[:, c, i, j] for i, j in members) / len(members)
        return from_cells(cells, x.shape[1], rows, cols)

    @staticmethod
    def depthwise_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """out[c, a, k] = sum_{u, v} w[c, u, v] x[c, 2a + u - 1, 2k + v - 1], zero outside the map."""
        height, width = x.shape[2:]
        rows, cols = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        cells = {}
        for c in range(x.shape[1]):
            for a in range(rows):
                for k in range(cols):
                    taps = [
                        weight[c, 0, u, v] * x[:, c, 2 * a + u - 1, 2 * k + v - 1]
                        for u in range(3)
                        for v in range(3)
                        if 0 <= 2 * a + u - 1 < height and 0 <= 2 * k + v - 1 < width
                    ]
                    cells[c, a, k] = sum(taps)
        return from_cells(cells, x.shape[1], rows, cols)

    @staticmethod
    def batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        out = []
        for c in range(x.shape[1]):
            values = x[:, c]
            if bn.training:
                mean = values.sum() / values.numel()
                var = ((values - mean) ** 2).sum() / values.numel()
            else:
                mean, var = bn.running_mean[c], bn.running_var[c]
            out.append((values - mean) / torch.sqrt(var + bn.eps) * bn.weight[c] + bn.bias[c])
        return torch.stack(out, 1)

    @staticmethod
    def excite(x: torch.Tensor, gathered: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour interpolation: output row i reads gathered row floor(i * rows / H), alike for columns."""
        (height, width), (rows, cols) = x.shape[2:], gathered.shape[2:]
        cells = {
            (c, i, j): x[:, c, i, j] * sigmoid(gathered[:, c, i * rows // height, j * cols // width])
            for c in range(x.shape[1])
            for i in range(height)
            for j in range(width)
        }
        return from_cells(cells, x.shape[1], height, width)


VARIANTS = {
    "free global": dict(extent=0, learned=False),
    "free e1": dict(extent=1, learned=False),
    "free e2": dict(extent=2, learned=False),
    "free e3": dict(extent=3, learned=False),
    "free e4": dict(extent=4, learned=False),
    "learned e2": dict(extent=2, learned=True),
    "learned e4": dict(extent=4, learned=True),
    "learned e8": dict(extent=8, learned=True),
}


def make_ge(**options) -> GatherExcite:
    return randomize(GatherExcite(8, **options)).double()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_ge_matches_naive_equations(variant: str, training: bool):
    block = make_ge(**VARIANTS[variant]).train(training)
    x = float64_maps(1)
    assert_matches_reference(block, NaiveGE(block), x)


@pytest.mark.parametrize("variant", ["free global", "free e2", "learned e4"])
def test_ge_gradients_match_naive_equations(variant: str):
    block = make_ge(**VARIANTS[variant])
    x = float64_maps(2).requires_grad_()
    weight = float64_maps(3)
    grads = assert_gradients_match_reference(block, NaiveGE(block), x, weight)
    assert len(grads) == (1 + 6 if variant == "learned e4" else 1)  # learned e4: two depthwise convs and two BNs


@pytest.mark.parametrize("variant", VARIANTS)
def test_ge_keeps_any_shape(variant: str):
    x = torch.randn(2, 8, 7, 9)
    assert make_ge(**VARIANTS[variant]).float()(x).shape == x.shape


@pytest.mark.parametrize("channels", [8, 64, 256])
@pytest.mark.parametrize("extent", [2, 4, 8])
def test_ge_params(channels: int, extent: int):
    learned = n_params(GatherExcite(channels, extent=extent, learned=True))
    assert learned == 11 * channels * round(math.log2(extent))  # GE-θ: log2(e) depthwise 3x3 convs + BN
    assert n_params(GatherExcite(channels, extent=extent, learned=False)) == 0  # GE-θ⁻
    assert n_params(attention_block("ge", channels)) == 0  # the config's global GE-θ⁻


def test_ge_learned_gather_is_the_papers():
    """log2(e) stride-2 depthwise 3 x 3 convolutions without bias, each with its BN, ReLUs between."""
    gather = GatherExcite(16, extent=4, learned=True).gather
    assert [type(layer) for layer in gather] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    for conv in (gather[0], gather[3]):
        assert (conv.groups, conv.kernel_size, conv.stride, conv.padding, conv.bias) == (16, (3, 3), (2, 2), (1, 1), None)


@pytest.mark.parametrize(
    "options,key",
    [
        (dict(extent=-1), "attn.options.extent"),
        (dict(extent=1.5), "attn.options.extent"),
        (dict(extent=True), "attn.options.extent"),
        (dict(extent="2"), "attn.options.extent"),
        (dict(learned="yes"), "attn.options.learned"),
        (dict(learned=1, extent=2), "attn.options.learned"),
        (dict(learned=True), "attn.options.extent"),  # global GE-θ needs each block's map size
        (dict(learned=True, extent=3), "attn.options.extent"),
        (dict(learned=True, extent=1), "attn.options.extent"),
    ],
)
def test_ge_rejects_bad_options_by_key(options, key):
    with pytest.raises(ConfigError) as error:
        attention_block("ge", 8, **options)
    assert error.value.key == key and "\n" not in str(error.value)


@pytest.mark.parametrize("extent", [0, 2])
def test_parameter_free_ge_is_channel_permutation_equivariant(extent: int):
    assert permutation_error(GatherExcite(16, extent=extent, learned=False).eval(), 16) < 1e-6


def test_learned_ge_is_not_channel_permutation_equivariant():
    assert permutation_error(randomize(GatherExcite(16, extent=2, learned=True)).eval(), 16) > 1e-2
