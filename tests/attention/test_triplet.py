"""Triplet attention (c3exp/attention/triplet.py) against a naive float64 transcription of the paper's three
branches; its closed-form parameter count and the Triplet ResNet-50 total; its option check; its channel
order dependence."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from c3exp.attention import create_attn
from c3exp.attention.common import PlaneGate
from c3exp.attention.triplet import TripletAttention
from c3exp.errors import ConfigError
from tests.conftest import (assert_gradients_match_reference, assert_matches_reference, attention_block, float64_maps, n_params,
                            permutation_error, randomize)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# A deliberately naive triplet attention: each branch's plane, pooled axis and gate written out.


class NaiveTriplet:
    """out = (x * g_cw + x * g_hc + x * g_hw) / 3, each gate sigmoid(BN(conv_k x k(Z-pool))) over its plane.

    cw: plane (C rows, W columns), pooled over H; hc: plane (H rows, C columns), pooled over W (the
    official rotations); hw: plane (H, W), pooled over C. Z-pool = [max, mean] along the pooled axis; the
    convolution is the cross-correlation over the zero-padded plane, a sum over its k x k taps; BN uses
    the batch statistics in training and the running ones in eval.
    """

    def __init__(self, block: TripletAttention):
        self.block = block

    @staticmethod
    def z_pool(value: Callable[[int, int, int], torch.Tensor], rows: int, cols: int, depth: int) -> torch.Tensor:
        """(N, 2, rows, cols): the max and the mean over r of value(p, q, r), cell by cell."""
        maxima, means = [], []
        for p in range(rows):
            for q in range(cols):
                running_max, total = value(p, q, 0), value(p, q, 0)
                for r in range(1, depth):
                    running_max = torch.maximum(running_max, value(p, q, r))
                    total = total + value(p, q, r)
                maxima.append(running_max)
                means.append(total / depth)
        batch = maxima[0].shape[0]
        return torch.stack([torch.stack(maxima, 1), torch.stack(means, 1)], 1).reshape(batch, 2, rows, cols)

    @staticmethod
    def gate(gate: PlaneGate, pooled: torch.Tensor) -> torch.Tensor:
        """sigmoid(BN(sum over channels and taps of w[ch, u, v] * padded[ch, p + u, q + v])): (N, rows, cols)."""
        kernel = gate.conv.kernel_size[0]
        rows, cols = pooled.shape[2:]
        padded = F.pad(pooled, [kernel // 2] * 4)
        conv = sum(
            gate.conv.weight[0, ch, u, v] * padded[:, ch, u : u + rows, v : v + cols]
            for ch in range(2)
            for u in range(kernel)
            for v in range(kernel)
        )
        bn = gate.bn
        if bn.training:
            mean = conv.sum() / conv.numel()
            var = ((conv - mean) ** 2).sum() / conv.numel()
        else:
            mean, var = bn.running_mean[0], bn.running_var[0]
        return 1 / (1 + torch.exp(-((conv - mean) / torch.sqrt(var + bn.eps) * bn.weight[0] + bn.bias[0])))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = x.shape
        cw = self.gate(self.block.cw, self.z_pool(lambda c, w, h: x[:, c, h, w], channels, width, height))
        hc = self.gate(self.block.hc, self.z_pool(lambda h, c, w: x[:, c, h, w], height, channels, width))
        hw = self.gate(self.block.hw, self.z_pool(lambda h, w, c: x[:, c, h, w], height, width, channels))
        out = torch.empty_like(x)
        for c in range(channels):
            for h in range(height):
                for w in range(width):
                    v = x[:, c, h, w]
                    out[:, c, h, w] = (v * cw[:, c, w] + v * hc[:, h, c] + v * hw[:, h, w]) / 3
        return out


def make_triplet(kernel_size: int = 7, channels: int = 8) -> TripletAttention:
    return randomize(TripletAttention(channels, kernel_size)).double()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_triplet_matches_naive_equations(kernel_size: int, training: bool):
    block = make_triplet(kernel_size).train(training)
    x = float64_maps(1)
    assert_matches_reference(block, NaiveTriplet(block), x)


def test_triplet_matches_naive_equations_on_a_square_map_with_as_many_channels():
    """C = H = W: a plane read in the wrong orientation would still have the right shape here."""
    block = make_triplet(3, channels=5).train(False)
    x = float64_maps(2, channels=5, size=(5, 5))
    with torch.no_grad():
        torch.testing.assert_close(block(x), NaiveTriplet(block)(x), rtol=1e-9, atol=1e-12)


def test_triplet_gradients_match_naive_equations():
    block = make_triplet(7)
    x = float64_maps(3).requires_grad_()
    weight = float64_maps(4)
    grads = assert_gradients_match_reference(block, NaiveTriplet(block), x, weight)
    assert len(grads) == 1 + 3 * 3  # each branch: conv weight, BN weight and bias


@pytest.mark.parametrize("channels", [8, 64, 2048])
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_triplet_params(channels: int, kernel_size: int):
    expected = 3 * (2 * kernel_size**2 + 2)
    assert n_params(TripletAttention(channels, kernel_size)) == expected  # independent of the channel count


def test_triplet_resnet50_adds_4800_parameters():
    """One block per bottleneck (after bn3, before the add, as the official ResNet): 16 x 300 = 4,800 over
    torchvision's 25,557,032, i.e. 25,561,832, the 25.56 M the official README reports for ResNet-50 +
    triplet attention (k = 7)."""
    from torchvision.models import resnet50
    from torchvision.models.resnet import Bottleneck

    with torch.device("meta"):
        net = resnet50()
    blocks = [module for module in net.modules() if isinstance(module, Bottleneck)]
    added = sum(n_params(attention_block("triplet", block.bn3.num_features)) for block in blocks)
    assert len(blocks) == 16 and added == 16 * 3 * (2 * 7**2 + 2) == 4_800
    assert n_params(net) == 25_557_032
    assert n_params(net) + added == 25_561_832
    assert round((n_params(net) + added) / 1e6, 2) == 25.56


def test_triplet_bn_is_the_official_one():
    bn = TripletAttention(8, 7).hw.bn
    assert isinstance(bn, nn.BatchNorm2d) and (bn.num_features, bn.momentum, bn.eps, bn.affine) == (1, 0.01, 1e-5, True)


@pytest.mark.parametrize("kernel_size", [4, 0, -1, "7", True, 7.0])
def test_triplet_rejects_bad_kernel_size_by_key(kernel_size):
    with pytest.raises(ConfigError) as error:
        create_attn("triplet", 8, kernel_size=kernel_size)
    assert error.value.key == "attn.options.kernel_size" and "\n" not in str(error.value)


def test_triplet_is_not_channel_permutation_equivariant():
    """Its cw and hc branches convolve along the channel axis: neighbouring channels interact."""
    assert permutation_error(randomize(TripletAttention(16, 7)).eval(), 16) > 1e-2
