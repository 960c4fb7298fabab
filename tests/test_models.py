"""The networks, built from the real Hydra configs: interface, attention placement, Table 1 counts."""
from __future__ import annotations

import itertools
import math

import hydra
import pytest
import torch
import torchvision
from omegaconf import DictConfig
from torch import nn

from c3exp.errors import ConfigError
from c3exp.models import ResNet, build_model
from c3exp.paths import config_dir
from c3exp.summary import PAPER_FIGURES
from c3exp.utils.complexity import count_macs, count_params, part_costs


pytestmark = pytest.mark.usefixtures("one_thread")


def compose(*overrides: str) -> DictConfig:
    with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra.compose("config", overrides=list(overrides))


def build(*overrides: str) -> ResNet:
    return build_model(compose(*overrides))


def attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if getattr(m, "is_attention", False)]


# ----------------------------------------------------------------------------------------------
# Every network x attention x placement trains: forward, backward, finite gradients.

# model -> (extra overrides, input size, blocks per stage)
NETWORKS = {
    "resnet20": ((), 32, (3, 3, 3)),
    "resnet32": ((), 32, (5, 5, 5)),
    "wrn": (("model.width=2",), 32, (3, 3, 3)),  # the real width is checked by the Table 1 tests
    "resnet18": (("data.num_classes=10",), 64, (2, 2, 2, 2)),
}
# C3 on resnet18 at 64x64: block sizes that divide (or are multiples of) the 16/8/4/2 maps.
TORCHVISION_C3_SIZES = "attn.options.spatial_sizes=[[8,8],[8,8],[8,8],[4,4]]"
ATTENTION_CASES = [("none", "every_block")] + [
    (name, placement) for name in ("se", "cbam", "c3") for placement in ("every_block", "first_block", "stage_input")
]


def expected_attention_count(placement: str, blocks: tuple[int, ...]) -> int:
    return sum(blocks) if placement == "every_block" else len(blocks)


@pytest.mark.parametrize("attn,placement", ATTENTION_CASES, ids=["-".join(c) for c in ATTENTION_CASES])
@pytest.mark.parametrize("network", NETWORKS)
def test_network_trains_with_attention(network: str, attn: str, placement: str):
    extra, size, blocks = NETWORKS[network]
    overrides = [f"model={network}", f"attn={attn}", f"attn.placement={placement}", *extra]
    if network == "resnet18" and attn == "c3":
        overrides.append(TORCHVISION_C3_SIZES)
    cfg = compose(*overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, cfg.data.num_classes)
    logits.logsumexp(dim=1).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    expected = 0 if attn == "none" else expected_attention_count(placement, blocks)
    assert len(attention_modules(model)) == expected


@pytest.mark.parametrize("network", NETWORKS)
def test_uniform_interface(network: str):
    extra, size, blocks = NETWORKS[network]
    overrides = [*extra, TORCHVISION_C3_SIZES] if network == "resnet18" else list(extra)
    model = build(f"model={network}", "attn=c3", *overrides).eval()
    assert isinstance(model.stem, nn.Module) and isinstance(model.stages, nn.ModuleList)
    assert len(model.stages) == len(blocks)
    for stage in model.stages:  # stage-input attention is the first module of its stage
        assert getattr(stage[0], "is_attention", False)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 4 and features.shape[:2] == (2, model.head[-1].in_features)
        torch.testing.assert_close(model.head(features), model(x))


def test_block_attention_sits_after_the_last_bn_before_the_add():
    model = build("model=resnet20", "attn=se", "attn.placement=first_block")
    first, second = model.stages[1][0], model.stages[1][1]
    assert getattr(first.attention, "is_attention", False) and isinstance(second.attention, nn.Identity)
    seen = {}
    first.register_forward_pre_hook(lambda module, args: seen.update(block_input=args[0]))
    first.bn2.register_forward_hook(lambda module, args, out: seen.update(bn2=out.clone()))
    first.attention.register_forward_hook(lambda module, args, out: seen.update(gate_input=args[0], gate=out.clone()))
    first.register_forward_hook(lambda module, args, out: seen.update(block=out))
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, 32, 32))
        torch.testing.assert_close(seen["gate_input"], seen["bn2"], rtol=0, atol=0)  # right after the last BN
        expected = torch.relu(seen["gate"] + first.shortcut(seen["block_input"]))  # then the add, then ReLU
        torch.testing.assert_close(seen["block"], expected)
    tv = build("model=resnet50", "attn=se", "data.num_classes=10")
    block = tv.stages[2][0]
    assert isinstance(block.bn3, nn.Sequential) and isinstance(block.bn3[0], nn.BatchNorm2d)
    assert getattr(block.bn3[1], "is_attention", False)


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
    model = build("model=resnet18", "attn=c3", "data.num_classes=10")
    assert [stage[0].spatial_size for stage in model.stages] == [(16, 16), (16, 16), (16, 16), (8, 8)]
    assert count_macs(model, (1, 3, 224, 224)) > count_macs(build("model=resnet18", "data.num_classes=10"), (1, 3, 224, 224))


# ----------------------------------------------------------------------------------------------
# Architecture details.


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


def test_build_model_is_deterministic_under_a_seed():
    torch.manual_seed(3)
    first = build("attn=c3")
    torch.manual_seed(3)
    second = build("attn=c3")
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------
# User errors name their config key.


@pytest.mark.parametrize(
    "overrides,key",
    [
        (("model.depth=21",), "model.depth"),
        (("model=wrn", "model.depth=20"), "model.depth"),
        (("model.width=0",), "model.width"),
        (("model.shortcut=option_b",), "model.shortcut"),
        (("+model.dropout=0.3",), "model.dropout"),
        (("model=resnet18", "model.arch=vgg16"), "model.arch"),
        (("attn=se", "attn.placement=everywhere"), "attn.placement"),
        (("attn=se", "attn.name=sk"), "attn.name"),
        (("attn=se", "+attn.options.groups=2"), "attn.options.groups"),
        (("attn=se", "attn.options.reduction=5"), "attn.options.reduction"),
        (("attn=c3", "attn.options.reduction=7"), "attn.options.reduction"),
        (("attn=c3", "attn.options.spatial_sizes=[[16,16],[8,8]]"), "attn.options.spatial_sizes"),
        (("attn=c3", "attn.options.spatial_sizes=[[16,16],[16,16],[0,8]]"), "attn.options.spatial_sizes"),
        (("attn=c3", "attn.options.resize=bilinear"), "attn.options.resize"),
        (("attn=c3", "+attn.extra=1"), "attn.extra"),
        (("data.num_classes=0",), "data.num_classes"),
    ],
)
def test_bad_settings_raise_config_error_with_key(overrides: tuple[str, ...], key: str):
    with pytest.raises(ConfigError) as error:
        build(*overrides)
    assert error.value.key == key


def test_c3_tile_on_maps_that_are_not_multiples_fails_clearly():
    model = build("attn=c3", "attn.options.resize=tile", "attn.options.spatial_sizes=[[16,16],[16,16],[12,12]]")
    with pytest.raises(ConfigError, match="attn.options.spatial_sizes.*16x16"):
        model(torch.randn(1, 3, 32, 32))


# ----------------------------------------------------------------------------------------------
# Table 1: parameters (M, two decimals) and MACs against the paper's FLOPs (M), as in paper.md.



@pytest.mark.parametrize("model,attn", PAPER_FIGURES, ids=["-".join(k) for k in PAPER_FIGURES])
def test_table1_cell(model: str, attn: str):
    """Params round to the paper's figure; MACs within 3% (6% for C3, counted tiled as the paper does)."""
    params_m, flops_m = PAPER_FIGURES[model, attn]
    tiled = ("attn.options.resize=tile",) if attn == "c3" else ()
    net = build(f"model={model}", f"attn={attn}", "data=cifar100", *tiled)
    assert round(count_params(net) / 1e6, 2) == params_m
    tolerance = 0.06 if attn == "c3" else 0.03
    assert count_macs(net) / 1e6 == pytest.approx(flops_m, rel=tolerance)


def c3_macs(channels: int, map_size: int, block_size: int, tiles: int, fold: bool, reduction: int = 8) -> int:
    """Closed form for one C3 block per image: encoder + decoder MLPs per channel, plus the C x C message product.

    Folded, the messages are A/r wide and the encoder's output layer and the decoder's input layer
    become one A/r x A/r layer (its own formation, once per batch, is not charged to the image).
    """
    positions = block_size * block_size
    hidden = positions // reduction
    assert map_size % block_size == 0
    if fold:
        per_tile = channels * (2 * positions * hidden + hidden * hidden) + hidden * channels * channels
    else:
        per_tile = channels * 4 * positions * hidden + positions * channels * channels
    return tiles * per_tile


@pytest.mark.parametrize("model,stage_inputs", [("resnet20", (16, 16, 32)), ("wrn", (16, 160, 320))])
def test_c3_macs_closed_form_for_every_path(model: str, stage_inputs: tuple[int, int, int]):
    baseline = count_macs(build(f"model={model}"))
    shapes = list(zip(stage_inputs, (32, 32, 16), (16, 16, 8)))  # channels, map size, block size
    for (resize, tiles), fold in itertools.product((("interpolate", 1), ("tile", 4)), (True, False)):
        net = build(f"model={model}", "attn=c3", f"attn.options.resize={resize}", f"attn.options.fold_messages={fold}")
        assert count_macs(net) - baseline == sum(c3_macs(*shape, tiles, fold) for shape in shapes)


def test_macs_are_per_image_and_scale_with_the_batch():
    net = build("attn=c3")
    assert count_macs(net, (4, 3, 32, 32)) == 4 * count_macs(net)


def test_c3_adds_the_same_parameters_to_every_cifar_resnet():
    added = {count_params(build(f"model={m}", "attn=c3")) - count_params(build(f"model={m}")) for m in ("resnet20", "resnet110")}
    assert added == {70032}


def test_part_costs_add_up():
    net = build("model=resnet56", "attn=c3")
    costs = part_costs(net)
    assert [c.name for c in costs] == ["stem", "stage1", "stage2", "stage3", "head"]
    assert sum(c.params for c in costs) == count_params(net)
    assert sum(c.macs for c in costs) == count_macs(net)


def test_count_macs_leaves_the_model_as_it_was():
    net = build("attn=c3").train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_macs(net)
    assert net.training
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])
