"""DeepLab heads and SegmentationNet on c3exp's backbones: the paper's ASPP, output shapes, training."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from c3exp.errors import ConfigError
from c3exp.models import cifar_resnet, torchvision_resnet
from c3exp.models.heads import HEADS, DeepLabV2Head, create_head
from c3exp.models.segmentation import SegmentationNet, segmentation_net

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 5


# ----------------------------------------------------------------------------------------------
# DeepLabv2's ASPP: four dilated 3x3 convolutions to class scores, summed.


def test_deeplabv2_head_has_the_paper_s_four_branches():
    head = DeepLabV2Head(8, CLASSES)
    assert len(head.branches) == 4
    assert [(c.dilation, c.padding) for c in head.branches] == [((r, r), (r, r)) for r in (6, 12, 18, 24)]
    assert all(c.kernel_size == (3, 3) and c.bias is not None for c in head.branches)
    assert sum(p.numel() for p in head.parameters()) == 4 * (8 * CLASSES * 9 + CLASSES)


def test_deeplabv2_head_sums_its_branches_and_keeps_the_size():
    torch.manual_seed(0)
    head = DeepLabV2Head(8, CLASSES)
    x = torch.randn(2, 8, 11, 13)
    expected = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(head.branches, (6, 12, 18, 24)))
    out = head(x)
    assert out.shape == (2, CLASSES, 11, 13)
    torch.testing.assert_close(out, expected)


def test_deeplabv2_head_is_initialised_as_deeplab():
    torch.manual_seed(0)
    head = DeepLabV2Head(64, 21)
    for conv in head.branches:
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert conv.weight.mean().abs().item() < 1e-3 and (conv.bias == 0).all()


def test_deeplabv2_rates_are_an_option():
    head = create_head("deeplabv2", 8, CLASSES, rates=[1, 2])
    assert [c.dilation[0] for c in head.branches] == [1, 2]
    with pytest.raises(ConfigError) as error:
        DeepLabV2Head(8, CLASSES, rates=[6, 0])
    assert error.value.key == "task.head_options.rates"


def test_registry_and_its_errors():
    assert isinstance(create_head("deeplabv3", 16, CLASSES), DeepLabHead)
    with pytest.raises(ConfigError) as error:
        create_head("pspnet", 16, CLASSES)
    message = str(error.value)
    assert error.value.key == "task.head" and all(name in message for name in HEADS) and "\n" not in message
    with pytest.raises(ConfigError) as error:
        create_head("deeplabv2", 16, CLASSES, dilations=[6])
    assert error.value.key == "task.head_options.dilations"


# ----------------------------------------------------------------------------------------------
# SegmentationNet: torchvision's {"out", "aux"} at the input size, whatever the backbone.

# backbone -> (builder, input size, last stage map size)
BACKBONES = {
    "resnet20": (lambda attn=None: cifar_resnet(10, attn), 32, 8),
    "resnet18-os8": (lambda attn=None: torchvision_resnet(10, attn, "resnet18", output_stride=8), 65, math.ceil(65 / 8)),
    "resnet18-os16": (lambda attn=None: torchvision_resnet(10, attn, "resnet18", output_stride=16), 65, math.ceil(65 / 16)),
}


@pytest.mark.parametrize("aux_loss", [False, True], ids=["no_aux", "aux"])
@pytest.mark.parametrize("head", ["deeplabv2", "deeplabv3"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_segmentation_output_shapes(backbone: str, head: str, aux_loss: bool):
    build, size, last = BACKBONES[backbone]
    net = segmentation_net(build(), CLASSES, head=head, aux_loss=aux_loss).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = net(x)
        stages = net.stage_outputs(x)
    assert set(out) == ({"out", "aux"} if aux_loss else {"out"})
    assert all(logits.shape == (2, CLASSES, size, size) for logits in out.values())
    assert stages[-1].shape[-2:] == (last, last)
    assert isinstance(net.head, HEADS[head]) and isinstance(net.aux_head, FCNHead if aux_loss else type(None))
    if aux_loss:
        assert net.aux_head[0].in_channels == net.stage_channels[-2]
    expected = F.interpolate(net.head(stages[-1]), size=(size, size), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["out"], expected)


def test_the_classifier_is_dropped_and_the_backbone_shared():
    backbone = torchvision_resnet(10, arch="resnet18", output_stride=8)
    net = SegmentationNet(backbone, DeepLabV2Head(512, CLASSES))
    assert not any(module is backbone.head for module in net.modules())
    assert not any(isinstance(module, nn.Linear) for module in net.modules())
    assert net.backbone.stem is backbone.stem and all(a is b for a, b in zip(net.backbone.stages, backbone.stages))
    assert isinstance(backbone.head[-1], nn.Linear)  # the caller's network is left as it was


def test_unknown_head_is_one_line():
    with pytest.raises(ConfigError) as error:
        segmentation_net(cifar_resnet(10), CLASSES, head="pspnet")
    assert error.value.key == "task.head" and "\n" not in str(error.value)


ATTENTION = {
    "c3": {"name": "c3", "placement": "stage_input"},
    "se": {"name": "se", "placement": "every_block"},
}


@pytest.mark.parametrize("attn", ATTENTION)
@pytest.mark.parametrize("backbone", ["resnet20", "resnet18-os8"])
def test_segmentation_trains_with_attention(backbone: str, attn: str):
    """Every parameter (attention, both heads) gets a finite gradient: nothing unused for DDP."""
    build, size, _ = BACKBONES[backbone]
    torch.manual_seed(0)
    net = segmentation_net(build(ATTENTION[attn]), CLASSES, head="deeplabv3", aux_loss=True)
    out = net(torch.randn(2, 3, size, size))
    target = torch.randint(0, CLASSES, (2, size, size))
    (F.cross_entropy(out["out"], target) + 0.5 * F.cross_entropy(out["aux"], target)).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert any(getattr(m, "is_attention", False) for m in net.backbone.modules())
