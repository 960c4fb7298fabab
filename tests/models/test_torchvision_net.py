"""torchvision's classifiers (c3exp/models/torchvision_net.py, and the ResNets built on it): any block at generic points
or at module paths (attn.at), C3 sized by the map at each point, at CIFAR and ImageNet input sizes; VGG's head sized
for the input."""
from __future__ import annotations

import logging
import re

import pytest
import torch
import torchvision
from torch import nn

import c3exp
from c3exp.errors import ConfigError
from c3exp.models import build_model, torchvision_net, torchvision_resnet
from c3exp.models.placement import FeatureMaps, block_side
from c3exp.tasks import build_task
from c3exp.utils.complexity import count_params
from tests.conftest import assert_names_bad_setting, attn_config, c3exp_cli, randomize

pytestmark = pytest.mark.usefixtures("one_thread")

REDUCTION = 8  # conf/attn/se.yaml and c3.yaml

# Channels at each block end (every_block points), in order; block counts per stage follow from them.
RESNET_BLOCKS = {"resnet101": (3, 4, 23, 3), "resnext50_32x4d": (3, 4, 6, 3), "wide_resnet50_2": (3, 4, 6, 3)}
BOTTLENECK_CHANNELS = (256, 512, 1024, 2048)
BLOCK_CHANNELS = {
    **{arch: [c for n, c in zip(blocks, BOTTLENECK_CHANNELS) for _ in range(n)] for arch, blocks in RESNET_BLOCKS.items()},
    "mobilenet_v2": [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320],  # the 17 inverted residuals
    "vgg16_bn": [64, 128, 256, 512, 512],  # one point per stage: after its last conv-BN-ReLU
}
# Stage-input channels and sides at 224 px; at 32 px every side is 7 times smaller.
STAGE_INPUTS = {
    **{arch: ([64, 256, 512, 1024], [56, 56, 28, 14]) for arch in RESNET_BLOCKS},
    "mobilenet_v2": ([32, 16, 24, 32, 96], [112, 112, 56, 28, 14]),
    "vgg16_bn": ([64, 64, 128, 256, 512], [224, 112, 56, 28, 14]),
}
MODELS = list(BLOCK_CHANNELS)


def se_params(channels: int) -> int:
    """SE's two bias-free FC layers, C -> C/r -> C."""
    return 2 * channels * (channels // REDUCTION)


def c3_params(side: int) -> int:
    """One square C3 block: encoder and decoder A -> max(1, A // r) -> A with biases, BN over the A positions."""
    positions = side * side
    hidden = max(1, positions // REDUCTION)
    return 2 * (2 * positions * hidden + hidden + positions) + 2 * positions


def compose(model: str, attn: str, size: int, *extra: str):
    return c3exp.compose([f"model={model}", f"attn={attn}", "data=synthetic", f"data.image_size={size}",
                          "data.num_classes=10", *extra])


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if getattr(m, "is_attention", False)]


def attention_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if getattr(m, "is_attention", False)]


# ----------------------------------------------------------------------------------------------
# The five networks with SE and C3 train at 32 and 224 px: counts, parameters in closed form, gradients.


# About 5 s each on 2 CPU cores (138M parameters); the ResNets take 2-3 s at 224 px.
SLOW_AT_224 = {"vgg16_bn"}
CASES = [
    pytest.param(model, attn, size, marks=[pytest.mark.slow] if size == 224 and model in SLOW_AT_224 else [])
    for model in MODELS for attn in ("se", "c3") for size in (32, 224)
]


@pytest.mark.parametrize("model,attn,size", CASES)
def test_network_trains_with_attention_at_cifar_and_imagenet_sizes(model: str, attn: str, size: int):
    torch.manual_seed(0)
    net = build_model(compose(model, attn, size))
    blocks = attention_blocks(net)
    with torch.device("meta"):  # the plain network's size only: nothing allocated
        added = count_params(net) - count_params(build_model(compose(model, "none", size)))
    if attn == "se":  # every_block
        assert added == sum(se_params(c) for c in BLOCK_CHANNELS[model])
    else:  # stage_input, each block sized by its stage's input
        sides = [block_side(side * size // 224) for side in STAGE_INPUTS[model][1]]
        assert [b.spatial_size for b in blocks] == [(s, s) for s in sides]
        assert added == sum(c3_params(s) for s in sides)
    batch = 2 if size == 32 else 1  # 1x1 maps at 32 px need two samples for BN's batch statistics
    logits = net(torch.randn(batch, 3, size, size))
    assert logits.shape == (batch, 10)
    logits.logsumexp(dim=1).sum().backward()
    attention_parameters = [p for b in blocks for p in b.parameters()]
    assert attention_parameters and all(p.grad is not None and torch.isfinite(p.grad).all() for p in attention_parameters)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("model", MODELS)
def test_placements_put_one_block_at_each_point_for_its_channels(model: str):
    with torch.device("meta"):  # counts and shapes only: nothing allocated
        for placement, channels in (("every_block", BLOCK_CHANNELS[model]), ("stage_input", STAGE_INPUTS[model][0])):
            net = build_model(compose(model, "se", 224, f"attn.placement={placement}"))
            assert [block.fc[0].in_features for block in attention_blocks(net)] == channels, placement
        first = build_model(compose(model, "se", 224, "attn.placement=first_block"))
    assert [len(attention_blocks(stage)) for stage in first.stages] == [1] * len(STAGE_INPUTS[model][0])


def test_mobilenet_attention_sits_after_the_last_bn_of_each_inverted_residual_before_the_add():
    net = torchvision_net(10, attn_config("se"), arch="mobilenet_v2", weights=None, input_size=32).eval()
    assert [len(stage) for stage in net.stages] == [1, 2, 3, 7, 5]  # the last stage ends with the 1280-channel conv
    assert net.stage_channels == (16, 24, 32, 96, 1280)
    block = net.stages[2][1]  # 32 -> 32 channels, stride 1: has the residual add
    assert isinstance(block.conv[-1], nn.BatchNorm2d) and block.attention.is_attention  # the BN left in place
    seen = {}
    block.register_forward_pre_hook(lambda module, args: seen.update(block_input=args[0]))
    block.conv[-1].register_forward_hook(lambda module, args, out: seen.update(bn=out.clone()), prepend=True)
    block.attention.register_forward_hook(lambda module, args, out: seen.update(attention_input=args[0], gate=out))
    block.register_forward_hook(lambda module, args, out: seen.update(block=out))
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(seen["attention_input"], seen["bn"], rtol=0, atol=0)
    torch.testing.assert_close(seen["block"], seen["block_input"] + seen["gate"])


def test_vgg_attention_ends_each_conv_stage_before_its_pool():
    net = torchvision_net(10, attn_config("se"), arch="vgg16_bn", weights=None, input_size=32)
    assert isinstance(net.stem[0], nn.Conv2d) and net.stage_channels == (64, 128, 256, 512, 512)
    for stage in net.stages:
        assert isinstance(stage[-1], nn.MaxPool2d) and stage[-2].is_attention and isinstance(stage[-3], nn.ReLU)


# VGG-16-BN at 32 px, 10 classes: 13 convs 3x3 with biases (C_in*C_out*9 + C_out each) over the widths 3-64-64 | 128-128 |
# 256-256-256 | 512-512-512 | 512-512-512: 1,792 + 36,928 + 73,856 + 147,584 + 295,168 + 2 * 590,080 + 1,180,160
# + 5 * 2,359,808 = 14,714,688; 13 BNs 2 * (2*64 + 2*128 + 3*256 + 6*512) = 8,448; the head 512 * 10 + 10 = 5,130.
VGG16_BN_AT_32_PX = 14_714_688 + 8_448 + 5_130  # 14,728,266 against 134.3M with torchvision's 224-px classifier


def test_vgg_gets_a_classifier_sized_for_small_inputs_unless_imagenet_weights_fill_it(tmp_path):
    net = torchvision_net(10, None, arch="vgg16_bn", weights=None, input_size=32)
    assert count_params(net) == VGG16_BN_AT_32_PX
    assert [type(m) for m in net.head] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with torch.device("meta"):
        imagenet = torchvision_net(10, None, arch="vgg16_bn", weights=None, input_size=224)
        theirs = torchvision.models.vgg16_bn(num_classes=10)
    assert count_params(imagenet) == count_params(theirs)
    path = tmp_path / "vgg13_bn.pth"
    with torch.device("meta"):  # shapes only: a 0.5 GB file otherwise
        torch.save(torchvision.models.vgg13_bn().state_dict(), path)
        pretrained = torchvision_net(10, None, arch="vgg13_bn", weights=str(path), input_size=32)
    assert pretrained.head[2].weight.shape == (4096, 512 * 7 * 7)  # the 224-px classifier, its fc6 and fc7 loaded


def test_measuring_the_maps_draws_no_random_numbers_and_allocates_nothing():
    net = torchvision.models.mobilenet_v2()
    state = torch.random.get_rng_state()
    maps = FeatureMaps.measure(net, 224)
    assert torch.equal(state, torch.random.get_rng_state())
    assert maps.outputs[net.features[18]] == (1280, 7, 7) and maps.inputs[net.features[14]] == (96, 14, 14)


@pytest.mark.parametrize("side,block", [(1, 1), (2, 1), (3, 2), (7, 4), (8, 4), (14, 8), (16, 8), (28, 16), (32, 16),
                                        (56, 16), (224, 16)])
def test_block_side_is_the_largest_power_of_two_below_the_map_side_up_to_16(side: int, block: int):
    assert block_side(side) == block


def test_torchvision_resnets_with_c3_work_at_32_px():
    """Their blocks used to be fixed for 224 px (and refused at 32): now each is sized by its stage input."""
    net = build_model(compose("resnet50", "c3", 32))  # stage inputs 8, 8, 4, 2
    assert [stage[0].spatial_size for stage in net.stages] == [(4, 4), (4, 4), (2, 2), (1, 1)]
    user = build_model(compose("resnet50", "c3", 32, "attn.options.spatial_sizes=[[8,8],[8,8],[4,4],[2,2]]"))
    assert [stage[0].spatial_size for stage in user.stages] == [(8, 8), (8, 8), (4, 4), (2, 2)]  # the user's override


# ----------------------------------------------------------------------------------------------
# One network whichever way it is built; C3 equivariant to channel permutations wherever it sits.


@pytest.mark.parametrize("model", MODELS)
def test_build_model_and_the_cli_give_the_same_network(model: str):
    cfg = compose(model, "c3", 32)
    with torch.device("meta"):  # names and shapes only: nothing allocated
        net = build_model(cfg)
        cli = build_task(cfg, run_config={}).net  # what `python -m c3exp` trains for these overrides
    assert [(n, t.shape) for n, t in net.state_dict().items()] == [(n, t.shape) for n, t in cli.state_dict().items()]


@pytest.mark.slow
def test_a_cli_run_trains_the_network_build_model_gives(tmp_path):
    overrides = ["model=mobilenet_v2", "attn=c3", "attn.at=[features.6,features.13.conv.3]", "data=synthetic",
                 "data.num_classes=10", "data.num_train=8", "data.num_test=4", "data.batch_size=4"]
    run = ["trainer=cpu", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]
    done = c3exp_cli(overrides + run, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    trained = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    built = build_model(c3exp.compose(overrides)).state_dict()
    assert [(f"net.{n}", t.shape) for n, t in built.items()] == [(n, t.shape) for n, t in trained.items()]


@pytest.mark.parametrize("model,size", [(model, 32) for model in MODELS] + [("mobilenet_v2", 224)])
def test_c3_is_channel_permutation_equivariant_in_every_network(model: str, size: int):
    # no channel groups: a permutation across groups of 512 would change who talks to whom
    net = build_model(compose(model, "c3", size, "attn.placement=every_block", "attn.options.max_group_channels=4096"))
    blocks = [randomize(b, seed) for seed, b in enumerate(attention_blocks(net))]
    inputs = {}

    def capture(module: nn.Module, args: tuple) -> None:  # returns None: the block still gets its own input
        inputs[module] = args[0].clone()

    for block in blocks:
        block.register_forward_pre_hook(capture)
    with torch.no_grad():
        net.eval()(torch.randn(1, 3, size, size))
    assert len(inputs) == len(blocks) == len(BLOCK_CHANNELS[model])
    generator = torch.Generator().manual_seed(0)
    for block, x in inputs.items():
        permutation = torch.randperm(x.shape[1], generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(block(x[:, permutation]), block(x)[:, permutation], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# attn.at: attention after torchvision's (or c3exp's) own module paths.


@pytest.mark.parametrize(
    "model,paths,names,sides",
    [
        ("resnet50", ["layer3.1.bn3", "conv1"], ["stem.0.1", "stages.2.1.bn3.1"], [16, 8]),  # 112 and 14 px maps
        ("mobilenet_v2", ["features.13.conv.3", "features.6"], ["stages.2.2.1", "stages.3.6.conv.3.1"], [16, 8]),
        ("vgg16_bn", ["features.2", "features.42"], ["stem.2.1", "stages.4.8.1"], [16, 8]),  # the stem, the last ReLU
        ("resnet20", ["stages.1.0.bn2"], ["stages.1.0.bn2.1"], [8]),  # c3exp's own names: 16 px
    ],
)
def test_attn_at_puts_attention_right_after_each_named_module(model: str, paths: list[str], names: list[str], sides: list[int]):
    net = build_model(compose(model, "c3", 224 if model != "resnet20" else 32, f"attn.at=[{','.join(paths)}]"))
    assert attention_names(net) == names  # the placement is ignored
    by_path = dict(zip(names, attention_blocks(net)))
    assert sorted(block.spatial_size for block in by_path.values()) == sorted((s, s) for s in sides)


def test_attn_at_sizes_come_from_spatial_sizes_given_one_per_path():
    net = build_model(compose("mobilenet_v2", "c3", 32, "attn.at=[features.1,features.18]",
                              "attn.options.spatial_sizes=[[4,4],[1,1]]"))
    assert [b.spatial_size for b in attention_blocks(net)] == [(4, 4), (1, 1)]
    with pytest.raises(ConfigError) as error:
        build_model(compose("mobilenet_v2", "c3", 32, "attn.at=[features.1]", "attn.options.spatial_sizes=[[4,4],[1,1]]"))
    assert error.value.key == "attn.options.spatial_sizes"


@pytest.mark.parametrize(
    "model,at,value",
    [
        ("resnet50", "[layer9.0]", "layer9.0"),
        ("resnet50", "[layer1.0.relu]", "layer1.0.relu"),  # runs three times in its block
        ("resnet50", "[fc]", "fc"),  # returns no feature map
        ("vgg16_bn", "[features]", "features"),  # split into the stem and stages: no longer one module
        ("mobilenet_v2", "[features.1,features.1]", ["features.1", "features.1"]),
        ("mobilenet_v2", "features.1", "features.1"),
    ],
)
def test_a_bad_attn_at_path_is_one_line_with_examples(model: str, at: str, value: str | list[str]):
    with pytest.raises(ConfigError) as error:
        build_model(compose(model, "se", 32, f"attn.at={at}"))
    assert_names_bad_setting(str(error.value), "attn.at", value)
    assert re.search(r"such as \[?\w+(\.\w+)*, ", error.value.allowed)


def test_pretrained_weights_load_around_attention_at_paths_and_blocks(tmp_path, caplog):
    torch.manual_seed(7)
    weights = torchvision.models.mobilenet_v2().state_dict()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(weights, path)
    attn = attn_config("se", placement="every_block", at=["features.18"])
    with caplog.at_level(logging.INFO, logger="c3exp.models.pretrained"):
        net = torchvision_net(10, attn, arch="mobilenet_v2", weights=str(path))
    ours = net.state_dict()
    assert ours["stages.4.4.0.0.weight"].equal(weights["features.18.0.weight"])  # features.18 -> stages.4.4.0
    assert ours["stages.3.6.conv.3.weight"].equal(weights["features.13.conv.3.weight"])
    (line,) = [r.getMessage() for r in caplog.records if r.name == "c3exp.models.pretrained"]
    assert line == f"pretrained weights {path}: classifier.1 skipped (1000 vs 10 classes)"


def test_pretrained_weights_load_into_the_new_resnet_archs(tmp_path):
    torch.manual_seed(8)
    weights = torchvision.models.resnext50_32x4d(num_classes=10).state_dict()
    path = tmp_path / "resnext50_32x4d.pth"
    torch.save(weights, path)
    net = torchvision_resnet(10, attn_config("se", at=["layer3.1.bn3"]), arch="resnext50_32x4d", output_stride=32,
                             weights=str(path))
    assert net.state_dict()["stages.2.1.bn3.0.running_var"].equal(weights["layer3.1.bn3.running_var"])
    assert net.state_dict()["head.2.weight"].equal(weights["fc.weight"])


# ----------------------------------------------------------------------------------------------
# attn.stages in the new networks.


@pytest.mark.parametrize(
    "model,overrides,per_stage",
    [
        ("mobilenet_v2", ("attn=se", "attn.stages=[2,-1]"), [0, 2, 0, 0, 4]),
        ("mobilenet_v2", ("attn=se", "attn.placement=every_other_block"), [1, 1, 2, 4, 2]),
        ("vgg16_bn", ("attn=c3", "attn.stages=[1,3]"), [1, 0, 1, 0, 0]),
        ("vgg16_bn", ("attn=se", "attn.placement=first_block", "attn.stages=[-2,-1]"), [0, 0, 0, 1, 1]),
    ],
)
def test_attn_stages_select_stages_in_the_new_networks(model: str, overrides: tuple[str, ...], per_stage: list[int]):
    with torch.device("meta"):
        net = build_model(c3exp.compose([f"model={model}", "data=synthetic", *overrides]))
    assert [len(attention_blocks(stage)) for stage in net.stages] == per_stage
