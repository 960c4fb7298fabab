"""The CIFAR ResNets and Wide-ResNets (c3exp/models/cifar_resnet.py): depths, widths, shortcuts, init, stage channels."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from c3exp.models import cifar_resnet, wide_resnet
from c3exp.utils.complexity import count_params
from tests.conftest import BACKBONE_ATTENTION, backbone_attention, build, output_channels

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "builder,depth,width,channels",
    [
        (cifar_resnet, 20, 1, (16, 32, 64)),
        (cifar_resnet, 32, 2, (32, 64, 128)),
        (cifar_resnet, 56, 1, (16, 32, 64)),
        (wide_resnet, 10, 4, (64, 128, 256)),
    ],
)
@pytest.mark.parametrize("attn", BACKBONE_ATTENTION)
def test_cifar_stage_channels(builder, depth: int, width: int, channels: tuple[int, ...], attn: str):
    model = builder(10, backbone_attention(attn), depth=depth, width=width, shortcut="projection")
    assert model.stage_channels == channels
    assert output_channels(model, 32) == channels


@pytest.mark.parametrize(
    "model,blocks,widths",
    [
        ("resnet20", 3, (16, 32, 64)),
        ("resnet44", 7, (16, 32, 64)),
        ("resnet110", 18, (16, 32, 64)),
        ("resnet1202", 200, (16, 32, 64)),
        ("wrn", 3, (160, 320, 640)),
        ("wrn28_10", 4, (160, 320, 640)),
    ],
)
def test_cifar_depths_and_widths(model: str, blocks: int, widths: tuple[int, ...]):
    net = build(f"model={model}")
    assert net.stem[0].out_channels == 16
    assert [len(stage) for stage in net.stages] == [blocks] * 3
    assert [stage[-1].conv2.out_channels for stage in net.stages] == list(widths)
    convs = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in net.modules())
    assert convs + 1 == 6 * blocks + 2  # 3x3 convs + the FC: ResNet depth


def test_resnet_width_factor_and_wrn_are_the_same_network():
    wide = build("model=resnet20", "model.width=10")
    assert count_params(wide) == count_params(build("model=wrn"))


def test_zero_pad_shortcut_has_no_parameters():
    projection, zero_pad = build("model=resnet20"), build("model=resnet20", "model.shortcut=zero_pad")
    # the two 1x1 conv + BN projections: 16*32 + 2*32 and 32*64 + 2*64
    assert count_params(projection) - count_params(zero_pad) == 16 * 32 + 64 + 32 * 64 + 128
    x = torch.randn(2, 3, 32, 32)
    out = zero_pad.stages[1][0].shortcut(torch.randn(2, 16, 32, 32))
    assert out.shape == (2, 32, 16, 16) and (out[:, 16:] == 0).all()
    assert zero_pad(x).shape == (2, 100)


def test_initialisation_follows_torchvision():
    net = build("model=resnet56")
    conv = net.stages[2][3].conv1
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - math.sqrt(2 / fan_out)) < 0.1 * math.sqrt(2 / fan_out)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((bn.weight == 1).all() and (bn.bias == 0).all() for bn in bns)
