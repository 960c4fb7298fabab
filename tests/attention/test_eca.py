"""ECA (c3exp/attention/eca.py) against a naive float64 transcription of the paper's equations; its adaptive kernel
size and parameter count (ECA-ResNet-50's included); bad options; its dependence on channel order."""
from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.attention import create_attn
from c3exp.attention.eca import ECA, adaptive_kernel_size
from c3exp.errors import ConfigError
from c3exp.paths import config_dir
from tests.conftest import (assert_gradients_match_reference, assert_matches_reference, attention_block, float64_maps, n_params,
                            permutation_error, randomize)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# A deliberately naive ECA, straight from the paper's equations: python loops, float64.


class NaiveECA:
    """y_c = mean of channel c over the H x W positions; omega_c = sigmoid(sum_t w_t y_{c + t - k // 2}), the k taps
    running over the channel's neighbours in channel order (none past either end: zero padding); out = omega_c x_c.

    Takes an ECA block's k weights.
    """

    def __init__(self, block: ECA):
        self.weight = block.conv.weight[0, 0]
        self.k = block.kernel_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        out = torch.zeros_like(x)
        for n in range(batch):
            pooled = [sum(x[n, c, i, j] for i in range(height) for j in range(width)) / (height * width) for c in range(channels)]
            for c in range(channels):
                neighbours = [(t, c + t - self.k // 2) for t in range(self.k)]
                logit = sum(self.weight[t] * pooled[d] for t, d in neighbours if 0 <= d < channels)
                gate = 1 / (1 + torch.exp(-logit))
                for i in range(height):
                    for j in range(width):
                        out[n, c, i, j] = gate * x[n, c, i, j]
        return out


def make_eca(channels: int, kernel_size: int | None) -> ECA:
    return randomize(ECA(channels, kernel_size, gamma=2, b=1)).double()


KERNELS = {"adaptive (C=8: 3)": None, "1": 1, "5": 5, "9 > C": 9}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_eca_matches_naive_equations(kernel: str, training: bool):
    block = make_eca(8, KERNELS[kernel]).train(training)
    x = float64_maps()
    assert_matches_reference(block, NaiveECA(block), x)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kernel", ["adaptive (C=8: 3)", "9 > C"])
def test_eca_gradients_match_naive_equations(kernel: str, training: bool):
    block = make_eca(8, KERNELS[kernel]).train(training)
    x = float64_maps(2).requires_grad_()
    assert_gradients_match_reference(block, NaiveECA(block), x)


# ----------------------------------------------------------------------------------------------
# Sizes: k = psi(C), k parameters.


@pytest.mark.parametrize(
    "channels,k",
    [(2, 1), (4, 1), (8, 3), (16, 3), (32, 3), (64, 3), (128, 5), (160, 5), (256, 5), (320, 5), (512, 5), (640, 5),
     (1024, 5), (2048, 7)],
)
def test_adaptive_kernel_size(channels: int, k: int):
    """|(log2 C + 1) / 2|_odd: 64 -> 3.5 -> 3, 128 -> 4 -> 5 (a tie goes up, as the official t + 1), 2048 -> 6 -> 7."""
    assert adaptive_kernel_size(channels, gamma=2, b=1) == k
    assert attention_block("eca", channels).kernel_size == k  # the config's ECA adapts as the paper's


@pytest.mark.parametrize("channels", [8, 16, 64, 256, 2048])
@pytest.mark.parametrize("kernel_size", [None, 1, 3, 7])
def test_eca_params_are_the_kernel_size(channels: int, kernel_size: int | None):
    k = adaptive_kernel_size(channels, gamma=2, b=1) if kernel_size is None else kernel_size
    assert n_params(ECA(channels, kernel_size, gamma=2, b=1)) == k


RESNET50_WIDTHS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3  # the 16 bottlenecks' output channels


def test_eca_resnet50_adds_86_parameters_not_the_papers_80():
    """The paper says ECA-Net50 adds 80 parameters to ResNet-50. Its own adaptive k over the 16 bottleneck widths
    gives 5, 5, 5, 7 by stage (log2 256 = 8 -> 4.5 -> 5), i.e. 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7 = 86. The 80 is the
    released model, eca_resnet50_k3557 (README of BangguWu/ECANet: kernel sizes 3, 5, 5, 7 by stage, set by
    hand): 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7 = 80. So adaptive ECA here adds 86; kernel_size 3 in stage 1 gives 80."""
    assert sum(n_params(attention_block("eca", c)) for c in RESNET50_WIDTHS) == 86
    k3557 = {256: 3, 512: 5, 1024: 5, 2048: 7}
    assert sum(n_params(attention_block("eca", c, kernel_size=k3557[c])) for c in RESNET50_WIDTHS) == 80


# ----------------------------------------------------------------------------------------------
# Settings.


@pytest.mark.parametrize(
    "options,key",
    [
        ({"kernel_size": 4}, "attn.options.kernel_size"),
        ({"kernel_size": 0}, "attn.options.kernel_size"),
        ({"kernel_size": -3}, "attn.options.kernel_size"),
        ({"kernel_size": 3.0}, "attn.options.kernel_size"),
        ({"kernel_size": True}, "attn.options.kernel_size"),
        ({"kernel_size": "3"}, "attn.options.kernel_size"),
        ({"gamma": 0}, "attn.options.gamma"),
        ({"gamma": -2}, "attn.options.gamma"),
        ({"gamma": True}, "attn.options.gamma"),
        ({"gamma": "2"}, "attn.options.gamma"),
        ({"b": "1"}, "attn.options.b"),
        ({"b": float("nan")}, "attn.options.b"),
        ({"b": None}, "attn.options.b"),
    ],
)
def test_eca_rejects_bad_options_by_key(options: dict, key: str):
    with pytest.raises(ConfigError) as error:
        create_attn("eca", 16, **options)
    assert error.value.key == key and "\n" not in str(error.value)


def test_eca_config_holds_the_papers_defaults():
    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "attn" / "eca.yaml"))
    options = [name for name in inspect.signature(ECA).parameters if name != "channels"]
    assert node == {"_target_": "c3exp.attention.eca.ECA", "name": "eca", "placement": "every_block", "stages": None, "at": None, "options": {"kernel_size": None, "gamma": 2, "b": 1}}
    assert list(node["options"]) == options  # every option the block takes, in its order


# ----------------------------------------------------------------------------------------------
# Symmetry: the 1D convolution reads channels in index order, so ECA is not channel-permutation equivariant
# (as SE and CBAM, unlike C3); only k = 1, one weight shared by every channel's own mean, is.


def test_eca_is_not_channel_permutation_equivariant():
    assert permutation_error(randomize(ECA(16, kernel_size=3, gamma=2, b=1)).eval(), 16) > 1e-2


def test_eca_with_one_tap_is_channel_permutation_equivariant():
    assert permutation_error(randomize(ECA(16, kernel_size=1, gamma=2, b=1)).eval(), 16) < 1e-6


def test_eca_mixes_only_the_k_nearest_channels():
    block = randomize(ECA(12, kernel_size=5, gamma=2, b=1)).double()
    x = torch.randn(1, 12, 3, 3, dtype=torch.float64, requires_grad=True)
    out = block(x)
    for c in range(12):
        (grad,) = torch.autograd.grad(out[:, c].sum(), x, retain_graph=True)
        reached = {d for d in range(12) if grad[:, d].abs().sum() > 0}
        assert reached == set(range(max(0, c - 2), min(12, c + 3)))
