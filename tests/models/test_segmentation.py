"""SegmentationNet on c3exp's backbones (c3exp/models/segmentation.py): torchvision's {"out", "aux"} at the input
size whatever the backbone, the classifier dropped, every parameter trained."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from c3exp.errors import ConfigError
from c3exp.models import cifar_resnet, torchvision_resnet
from c3exp.models.heads import HEADS, DeepLabV2Head
from c3exp.models.segmentation import SegmentationNet, segmentation_net
from tests.conftest import attn_config

pytestmark = pytest.mark.usefixtures("one_thread")


CLASSES = 5
resnet18 = partial(torchvision_resnet, arch="resnet18", weights=None)  # conf/model/resnet18.yaml's


# backbone -> (builder, input size, last stage map size)
BACKBONES = {
    "resnet20": (lambda attn=None: cifar_resnet(10, attn, depth=20, width=1, shortcut="projection"), 32, 8),
    "resnet18-os8": (lambda attn=None: resnet18(10, attn, output_stride=8), 65, math.ceil(65 / 8)),
    "resnet18-os16": (lambda attn=None: resnet18(10, attn, output_stride=16), 65, math.ceil(65 / 16)),
}


@pytest.mark.parametrize("aux_loss", [False, True], ids=["no_aux", "aux"])
@pytest.mark.parametrize("head", ["deeplabv2", "deeplabv3"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_segmentation_output_shapes(backbone: str, head: str, aux_loss: bool):
    build, size, last = BACKBONES[backbone]
    net = segmentation_net(build(), CLASSES, head=head, aux_loss=aux_loss, head_options=None).eval()
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
    backbone = resnet18(10, output_stride=8)
    net = SegmentationNet(backbone, DeepLabV2Head(512, CLASSES))
    assert not any(module is backbone.head for module in net.modules())
    assert not any(isinstance(module, nn.Linear) for module in net.modules())
    assert net.backbone.stem is backbone.stem and all(a is b for a, b in zip(net.backbone.stages, backbone.stages))
    assert isinstance(backbone.head[-1], nn.Linear)  # the caller's network is left as it was


def test_unknown_head_is_one_line():
    with pytest.raises(ConfigError) as error:
        segmentation_net(BACKBONES["resnet20"][0](), CLASSES, head="pspnet", aux_loss=False, head_options=None)
    assert error.value.key == "task.net.head" and "\n" not in str(error.value)


ATTENTION = {
    "c3": attn_config("c3", placement="stage_input"),
    "se": attn_config("se", placement="every_block"),
}


@pytest.mark.parametrize("attn", ATTENTION)
@pytest.mark.parametrize("backbone", ["resnet20", "resnet18-os8"])
def test_segmentation_trains_with_attention(backbone: str, attn: str):
    """Every parameter (attention, both heads) gets a finite gradient: nothing unused for DDP."""
    build, size, _ = BACKBONES[backbone]
    torch.manual_seed(0)
    net = segmentation_net(build(ATTENTION[attn]), CLASSES, head="deeplabv3", aux_loss=True, head_options=None)
    out = net(torch.randn(2, 3, size, size))
    target = torch.randint(0, CLASSES, (2, size, size))
    (F.cross_entropy(out["out"], target) + 0.5 * F.cross_entropy(out["aux"], target)).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert any(getattr(m, "is_attention", False) for m in net.backbone.modules())
