"""SRM (c3exp/attention/srm.py) against a naive float64 transcription of the paper's equations (with the official
code's unbiased std); its parameter count; its one setting; its channel-wise symmetry."""
from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.attention.srm import SRM
from c3exp.errors import ConfigError
from c3exp.paths import config_dir
from tests.conftest import assert_gradients_match_reference, assert_matches_reference, float64_maps, n_params, permutation_error, randomize

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# A deliberately naive SRM, straight from the paper's equations: python loops, float64.


class NaiveSRM:
    """mu_nc = 1/HW sum_ij x_ncij, sigma_nc = sqrt(1/(HW - 1) sum_ij (x_ncij - mu_nc)^2) (the official code's unbiased
    std; the paper writes 1/HW); z_nc = w_c1 mu_nc + w_c2 sigma_nc; z~ = BN(z) per channel over the batch (batch mean
    and biased variance in training, running statistics in eval); out = sigmoid(z~_nc) x_nc.

    Loops over samples, channels and positions. Takes an SRM block's weights.
    """

    def __init__(self, block: SRM):
        self.cfc, self.bn = block.cfc, block.bn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        positions = [(i, j) for i in range(height) for j in range(width)]
        z = [[None] * channels for _ in range(batch)]
        for n in range(batch):
            for c in range(channels):
                mean = sum(x[n, c, i, j] for i, j in positions) / len(positions)
                std = torch.sqrt(sum((x[n, c, i, j] - mean) ** 2 for i, j in positions) / (len(positions) - 1))
                z[n][c] = self.cfc[c, 0] * mean + self.cfc[c, 1] * std
        out = torch.zeros_like(x)
        for c in range(channels):
            if self.bn.training:
                mean = sum(z[n][c] for n in range(batch)) / batch
                var = sum((z[n][c] - mean) ** 2 for n in range(batch)) / batch
            else:
                mean, var = self.bn.running_mean[c], self.bn.running_var[c]
            for n in range(batch):
                gate = 1 / (1 + torch.exp(-((z[n][c] - mean) / torch.sqrt(var + self.bn.eps) * self.bn.weight[c] + self.bn.bias[c])))
                for i, j in positions:
                    out[n, c, i, j] = gate * x[n, c, i, j]
        return out


def make_srm(channels: int = 8) -> SRM:
    return randomize(SRM(channels)).double()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,batch", [((5, 6), 2), ((1, 2), 3)], ids=["5x6", "1x2 (2 positions)"])
def test_srm_matches_naive_equations(shape: tuple[int, int], batch: int, training: bool):
    block = make_srm().train(training)
    x = float64_maps(size=shape, batch=batch)
    assert_matches_reference(block, NaiveSRM(block), x)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_srm_gradients_match_naive_equations(training: bool):
    block = make_srm().train(training)
    x = float64_maps(2).requires_grad_()
    assert_gradients_match_reference(block, NaiveSRM(block), x)


def test_srm_uses_the_unbiased_std():
    """Only the std counts (w_c1 = 0, w_c2 = 1, BN the identity in eval): the gate is sigmoid of the unbiased std."""
    block = SRM(4).double().eval()
    with torch.no_grad():
        block.cfc[:, 1] = 1
    x = float64_maps(channels=4)
    expected = x * torch.sigmoid(x.flatten(2).std(dim=2, unbiased=True) / (1 + block.bn.eps) ** 0.5)[:, :, None, None]
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_srm_on_a_single_position_is_one_line():
    """The unbiased std of one value is undefined (NaN): a 1x1 map is a user error, not NaN gates."""
    with pytest.raises(ConfigError) as error:
        SRM(4)(torch.randn(2, 4, 1, 1))
    assert error.value.key == "attn.name" and "1x1" in str(error.value) and "\n" not in str(error.value)


def test_srm_starts_with_zero_style_weights():
    """The official initialisation: the channel-wise layer is zero, so every gate starts at sigmoid(BN(0))."""
    assert torch.equal(SRM(8).cfc, torch.zeros(8, 2))


# ----------------------------------------------------------------------------------------------
# Sizes and settings: 2C (channel-wise layer) + 2C (BN affine) = 4C; nothing to set but the channels.


@pytest.mark.parametrize("channels", [1, 8, 16, 64, 256, 2048])
def test_srm_params_are_4c(channels: int):
    assert n_params(SRM(channels)) == 4 * channels


def test_srm_has_no_options():
    assert list(inspect.signature(SRM).parameters) == ["channels"]
    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "attn" / "srm.yaml"))
    assert node == {"_target_": "c3exp.attention.srm.SRM", "name": "srm", "placement": "every_block", "stages": None, "at": None, "options": {}}


# ----------------------------------------------------------------------------------------------
# Symmetry: every channel is gated from its own statistics by its own two weights and BN, so SRM does not mix
# channels. It is not channel-permutation equivariant (each channel has its own weights: permuting the input
# alone changes the result), but it is equivariant when its per-channel parameters are permuted alike.


def test_srm_is_not_channel_permutation_equivariant():
    assert permutation_error(randomize(SRM(16)).eval(), 16) > 1e-2


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_srm_is_equivariant_with_its_parameters_permuted_alike(training: bool):
    block = make_srm(16).train(training)
    permutation = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    permuted = make_srm(16).train(training)
    with torch.no_grad():
        for tensor, source in zip(permuted.state_dict().values(), block.state_dict().values()):
            tensor.copy_(source[permutation] if tensor.dim() else source)
    x = float64_maps(channels=16)
    torch.testing.assert_close(permuted(x[:, permutation]), block(x)[:, permutation], rtol=1e-12, atol=1e-12)
