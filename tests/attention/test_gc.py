"""The GC block (c3exp/attention/gc.py) against a naive float64 transcription of the paper's equations; its
closed-form parameter count; its official initialisation; bad options; its dependence on channel order."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.attention import create_attn
from c3exp.attention.gc import GlobalContext
from c3exp.errors import ConfigError
from c3exp.paths import config_dir
from tests.conftest import (assert_gradients_match_reference, assert_matches_reference, attention_block, float64_maps, n_params,
                            permutation_error, randomize)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# A deliberately naive GC block, straight from the paper's equations: python loops, float64.


class NaiveGC:
    """z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j alpha_j x_j)), alpha_j = exp(W_k x_j) / sum_m exp(W_k x_m).

    Loops over samples, positions, channels and hidden units; LayerNorm over the P hidden units with their mean
    and biased variance. Takes a GlobalContext block's weights.
    """

    def __init__(self, block: GlobalContext):
        self.mask = block.mask
        self.first, self.norm, _, self.last = block.transform

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        hidden_units = self.first.out_features
        positions = [(i, j) for i in range(height) for j in range(width)]
        out = torch.zeros_like(x)
        for n in range(batch):
            # context modelling: attention pooling over positions
            logits = [sum(self.mask.weight[0, c] * x[n, c, i, j] for c in range(channels)) + self.mask.bias[0] for i, j in positions]
            exps = [torch.exp(logit) for logit in logits]
            alpha = [e / sum(exps) for e in exps]
            context = [sum(a * x[n, c, i, j] for a, (i, j) in zip(alpha, positions)) for c in range(channels)]
            # transform: C -> P, LayerNorm, ReLU, P -> C
            hidden = [sum(self.first.weight[k, c] * context[c] for c in range(channels)) + self.first.bias[k] for k in range(hidden_units)]
            mean = sum(hidden) / hidden_units
            var = sum((h - mean) ** 2 for h in hidden) / hidden_units
            hidden = [
                torch.relu((h - mean) / torch.sqrt(var + self.norm.eps) * self.norm.weight[k] + self.norm.bias[k])
                for k, h in enumerate(hidden)
            ]
            delta = [sum(self.last.weight[c, k] * hidden[k] for k in range(hidden_units)) + self.last.bias[c] for c in range(channels)]
            # fusion: broadcast addition
            for c in range(channels):
                for i, j in positions:
                    out[n, c, i, j] = x[n, c, i, j] + delta[c]
        return out


def make_gc(channels: int, ratio: float) -> GlobalContext:
    return randomize(GlobalContext(channels, ratio)).double()


RATIOS = {"P=1 (paper's 1/16)": 1 / 16, "P=2": 0.25, "P=8": 1.0}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("ratio", RATIOS)
def test_gc_matches_naive_equations(ratio: str, training: bool):
    block = make_gc(8, RATIOS[ratio]).train(training)
    x = float64_maps()
    assert_matches_reference(block, NaiveGC(block), x)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gc_gradients_match_naive_equations(training: bool):
    block = make_gc(8, 0.25).train(training)
    x = float64_maps(2).requires_grad_()
    actual = assert_gradients_match_reference(block, NaiveGC(block), x, atol=1e-9)
    # the mask's bias shifts every logit alike: the softmax over positions cancels it
    grads = dict(zip(["input", *(name for name, _ in block.named_parameters())], actual))
    assert grads["mask.bias"].abs().item() < 1e-9


def test_gc_starts_as_the_identity():
    """The official initialisation zeroes the transform's last layer: a fresh block adds nothing."""
    block = attention_block("gc", 16)
    x = torch.randn(2, 16, 5, 6)
    assert torch.equal(block(x), x)
    assert block.mask.weight.std().item() > 0  # the mask is not zeroed (Kaiming, fan_in)


# ----------------------------------------------------------------------------------------------
# Sizes: (C + 1) + (CP + P) + 2P + (PC + C) with P = max(1, int(C * ratio)).


@pytest.mark.parametrize("channels", [8, 16, 64, 256, 2048])
@pytest.mark.parametrize("ratio", [1 / 16, 0.25, 1.0])
def test_gc_params_closed_form(channels: int, ratio: float):
    hidden = max(1, int(channels * ratio))
    assert n_params(GlobalContext(channels, ratio)) == 2 * channels * hidden + 2 * channels + 3 * hidden + 1


# ----------------------------------------------------------------------------------------------
# Settings.


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5, math.inf, math.nan, True, "1/16", None])
def test_gc_rejects_bad_ratio_by_key(ratio):
    with pytest.raises(ConfigError) as error:
        create_attn("gc", 16, ratio=ratio)
    assert error.value.key == "attn.options.ratio" and "\n" not in str(error.value)


def test_gc_config_holds_the_papers_defaults():
    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "attn" / "gc.yaml"))
    options = [name for name in inspect.signature(GlobalContext).parameters if name != "channels"]
    assert node == {"_target_": "c3exp.attention.gc.GlobalContext", "name": "gc", "placement": "every_block", "stages": [-3, -2, -1], "at": None, "options": {"ratio": 1 / 16}}
    assert list(node["options"]) == options  # every option the block takes, in its order


# ----------------------------------------------------------------------------------------------
# Symmetry: the mask's per-channel weights and the dense transform read channels by index, so the GC block is
# not channel-permutation equivariant (as SE and CBAM, unlike C3).


def test_gc_is_not_channel_permutation_equivariant():
    assert permutation_error(randomize(GlobalContext(16, 0.25)).eval(), 16) > 1e-2
