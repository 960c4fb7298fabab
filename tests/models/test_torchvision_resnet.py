"""torchvision's ResNets as c3exp backbones (c3exp/models/torchvision_resnet.py): stage channels, output stride
by dilation with torchvision's weight names and shapes kept, C3 sizes at 224 px, block attention by hooks."""
from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from c3exp.errors import ConfigError
from c3exp.schema import check_settings
from c3exp.models import ResNet, build_model, torchvision_resnet
from c3exp.models.torchvision_resnet import BASIC_BLOCKS_PER_STAGE
from c3exp.utils.complexity import count_macs, count_params
from tests.conftest import (BACKBONE_ATTENTION, attn_config, backbone_attention, build, hydra_compose as compose,
                            output_channels, torchvision_key_in_ours)

pytestmark = pytest.mark.usefixtures("one_thread")


def resnet(arch: str, attn: dict | None = None, output_stride: int = 32, **options) -> ResNet:
    """torchvision_resnet for 10 classes, conf/model/<arch>.yaml's settings unless told."""
    return torchvision_resnet(10, attn, arch=arch, output_stride=output_stride, weights=None, **options)


TORCHVISION_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


@pytest.mark.parametrize("attn", BACKBONE_ATTENTION)
@pytest.mark.parametrize("arch", TORCHVISION_CHANNELS)
def test_torchvision_stage_channels(arch: str, attn: str):
    model = resnet(arch, backbone_attention(attn))
    assert model.stage_channels == TORCHVISION_CHANNELS[arch]
    assert output_channels(model, 32) == TORCHVISION_CHANNELS[arch]


# ----------------------------------------------------------------------------------------------
# Output stride: the last stages dilated instead of strided, names and shapes of the weights kept.


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_output_stride_sets_the_map_sizes(arch: str, output_stride: int):
    model = resnet(arch, output_stride=output_stride).eval()
    with torch.no_grad():
        sizes = [out.shape[-2:] for out in model.stage_outputs(torch.randn(1, 3, 65, 65))]
    strides = [min(stride, output_stride) for stride in (4, 8, 16, 32)]
    assert sizes == [(math.ceil(65 / s),) * 2 for s in strides]


def block_dilations(model: nn.Module) -> list[int]:
    """The dilation of every residual block's 3x3 convolutions (one value per block)."""
    dilations = []
    for stage in model.stages:
        for block in stage:
            values = {conv.dilation[0] for conv in block.modules() if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)}
            assert len(values) == 1
            dilations.extend(values)
    return dilations


# Per-block dilation of the 3x3 convolutions: the first block of a dilated stage keeps the previous one.
DILATIONS = {
    ("resnet18", 16): [1, 1, 1, 1, 1, 1, 1, 2],
    ("resnet18", 8): [1, 1, 1, 1, 1, 2, 2, 4],
    ("resnet50", 16): [1] * 13 + [1, 2, 2],
    ("resnet50", 8): [1] * 7 + [1] + [2] * 5 + [2, 4, 4],
}


@pytest.mark.parametrize("arch,output_stride", DILATIONS)
def test_dilations_follow_torchvision(arch: str, output_stride: int):
    """resnet50's are torchvision's own; resnet18's BasicBlocks (which torchvision refuses to dilate) follow them."""
    assert block_dilations(resnet(arch, output_stride=output_stride)) == DILATIONS[arch, output_stride]


def test_basic_block_counts_are_torchvision_s():
    for arch, counts in BASIC_BLOCKS_PER_STAGE.items():
        net = getattr(torchvision.models, arch)()
        assert [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)] == counts


@pytest.mark.parametrize("output_stride", [32, 8])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_parameter_names_are_unchanged(arch: str, output_stride: int):
    ours = resnet(arch, output_stride=output_stride).state_dict()
    theirs = getattr(torchvision.models, arch)(num_classes=10).state_dict()
    assert list(ours) == [torchvision_key_in_ours(key) for key in theirs]
    assert {k: v.shape for k, v in ours.items()} == {torchvision_key_in_ours(k): v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("value", [4, 64, "8", True, None])
def test_bad_output_stride_is_one_line(value):
    with pytest.raises(ConfigError) as error:
        check_settings({"output_stride": value}, torchvision_resnet, "model.")
    assert error.value.key == "model.output_stride" and "32, 16, 8" in str(error.value) and "\n" not in str(error.value)


def test_output_stride_and_weights_through_the_config(tmp_path: Path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    cfg = compose("model=resnet18", "data.num_classes=10", "++model.output_stride=8", f"++model.weights={path}")
    model = build_model(cfg)
    assert block_dilations(model)[-2:] == [2, 4]
    with pytest.raises(ConfigError) as error:
        build_model(compose("model=resnet34", "model.output_stride=4"))
    assert error.value.key == "model.output_stride"


# ----------------------------------------------------------------------------------------------
# The same network as torchvision's, measured the same way; C3's default blocks at 224 px.


def test_torchvision_wrapper_keeps_torchvision_weights_shape():
    for arch in ("resnet18", "resnet50"):
        ours = build(f"model={arch}", "data.num_classes=10")
        theirs = getattr(torchvision.models, arch)(num_classes=10)
        assert count_params(ours) == count_params(theirs)
        assert count_macs(ours, (1, 3, 224, 224)) == count_macs(_as_resnet(theirs), (1, 3, 224, 224))


def _as_resnet(net: torchvision.models.ResNet) -> ResNet:
    """torchvision's net behind our interface, unchanged, to measure it the same way."""
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return ResNet(stem, [net.layer1, net.layer2, net.layer3, net.layer4], nn.Sequential(net.avgpool, nn.Flatten(), net.fc))


def test_torchvision_default_c3_sizes_at_224():
    model = build("model=resnet18", "attn=c3", "data.num_classes=10", "data.image_size=224")
    assert [stage[0].spatial_size for stage in model.stages] == [(16, 16), (16, 16), (16, 16), (8, 8)]
    assert count_macs(model, (1, 3, 224, 224)) > count_macs(build("model=resnet18", "data.num_classes=10"), (1, 3, 224, 224))


# ----------------------------------------------------------------------------------------------
# Block attention hangs on its BN by a hook: torchvision's names stay, copies and compiled networks run it.

SE_EVERY_BLOCK = attn_config("se", placement="every_block")


def test_block_attention_keeps_every_torchvision_name():
    with torch.device("meta"):  # names only
        ours = list(resnet("resnet50", SE_EVERY_BLOCK).state_dict())
        theirs = list(torchvision.models.resnet50(num_classes=10).state_dict())
    attention = [key for key in ours if ".attention." in key]
    assert [key for key in ours if key not in attention] == [torchvision_key_in_ours(key) for key in theirs]
    assert len(attention) == 16 * 2  # one SE per bottleneck (3 + 4 + 6 + 3), two bias-free linear layers each
    assert attention[:2] == ["stages.0.0.attention.fc.0.weight", "stages.0.0.attention.fc.2.weight"]


def test_block_attention_runs_on_the_last_bn_s_output_before_the_add():
    net = resnet("resnet50", attn_config("se", placement="first_block"), input_size=32).eval()
    block = net.stages[2][0]
    assert isinstance(block.bn3, nn.BatchNorm2d) and block.attention.is_attention  # the BN left in place
    assert not hasattr(net.stages[2][1], "attention")
    seen = {}
    block.register_forward_pre_hook(lambda module, args: seen.update(block_input=args[0]))
    block.bn3.register_forward_hook(lambda module, args, out: seen.update(bn3=out.clone()), prepend=True)  # before ours
    block.attention.register_forward_hook(lambda module, args, out: seen.update(gate_input=args[0], gate=out.clone()))
    block.register_forward_hook(lambda module, args, out: seen.update(block=out))
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
        torch.testing.assert_close(seen["gate_input"], seen["bn3"], rtol=0, atol=0)
        torch.testing.assert_close(seen["block"], torch.relu(seen["gate"] + block.downsample(seen["block_input"])))


def test_block_attention_runs_in_deep_copies_pickles_and_compiled_networks():
    torch.manual_seed(0)
    net = resnet("resnet18", SE_EVERY_BLOCK, input_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = net(x)
        twin = copy.deepcopy(net)
        torch.testing.assert_close(twin(x), expected, rtol=0, atol=0)
        for parameter in twin.stages[3][1].attention.parameters():
            parameter.zero_()  # the copy's hook runs the copy's block, not the original's
        assert not torch.equal(twin(x), expected) and torch.equal(net(x), expected)
        buffer = io.BytesIO()
        torch.save(net, buffer)
        buffer.seek(0)
        torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), expected, rtol=0, atol=0)
        torch.compiler.reset()
        compiled = torch.compile(net, fullgraph=True, backend="aot_eager")  # fullgraph: the hooks trace, no graph break
        torch.testing.assert_close(compiled(x), expected)
        torch.compiler.reset()
