"""Backbones as feature extractors: stage channels, output stride, pretrained weights, C3 at any map size."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
import torchvision
from omegaconf import DictConfig
from torch import nn

from c3exp.attention.c3 import C3Block
from c3exp.errors import ConfigError, DataNotFoundError
from c3exp.models import build_model, cifar_resnet, torchvision_resnet, wide_resnet
from c3exp.models.torchvision_resnet import BASIC_BLOCKS_PER_STAGE
from c3exp.paths import config_dir

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHVISION_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}
ATTENTION = {
    "none": None,
    "cbam": {"name": "cbam", "placement": "every_block"},  # has a 2 -> 1 convolution of its own
    "c3": {"name": "c3", "placement": "stage_input"},
}
C3_STAGE_INPUT = ATTENTION["c3"]
SE_EVERY_BLOCK = {"name": "se", "placement": "every_block"}


def compose(*overrides: str) -> DictConfig:
    with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra.compose("config", overrides=list(overrides))


def output_channels(model: nn.Module, size: int) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(out.shape[1] for out in model.eval().stage_outputs(torch.randn(1, 3, size, size)))


# ----------------------------------------------------------------------------------------------
# stage_channels: what the heads are built for, equal to what the stages really output.


@pytest.mark.parametrize("attn", ATTENTION)
@pytest.mark.parametrize("arch", TORCHVISION_CHANNELS)
def test_torchvision_stage_channels(arch: str, attn: str):
    model = torchvision_resnet(10, ATTENTION[attn], arch)
    assert model.stage_channels == TORCHVISION_CHANNELS[arch]
    assert output_channels(model, 32) == TORCHVISION_CHANNELS[arch]


@pytest.mark.parametrize(
    "builder,depth,width,channels",
    [
        (cifar_resnet, 20, 1, (16, 32, 64)),
        (cifar_resnet, 32, 2, (32, 64, 128)),
        (cifar_resnet, 56, 1, (16, 32, 64)),
        (wide_resnet, 10, 4, (64, 128, 256)),
    ],
)
@pytest.mark.parametrize("attn", ATTENTION)
def test_cifar_stage_channels(builder, depth: int, width: int, channels: tuple[int, ...], attn: str):
    model = builder(10, ATTENTION[attn], depth=depth, width=width)
    assert model.stage_channels == channels
    assert output_channels(model, 32) == channels


def test_stage_channels_is_read_only():
    with pytest.raises(AttributeError):
        cifar_resnet(10).stage_channels = (1, 2, 3)


# ----------------------------------------------------------------------------------------------
# Output stride: the last stages dilated instead of strided, names and shapes of the weights kept.


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_output_stride_sets_the_map_sizes(arch: str, output_stride: int):
    model = torchvision_resnet(10, arch=arch, output_stride=output_stride).eval()
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
    assert block_dilations(torchvision_resnet(10, arch=arch, output_stride=output_stride)) == DILATIONS[arch, output_stride]


def test_basic_block_counts_are_torchvision_s():
    for arch, counts in BASIC_BLOCKS_PER_STAGE.items():
        net = getattr(torchvision.models, arch)()
        assert [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)] == counts


def torchvision_key_in_ours(key: str, stage_input: bool = False, wrapped_bn: str | None = None) -> str:
    """Where c3exp puts a torchvision tensor, written out by hand (the test's own oracle)."""
    root, rest = key.split(".", 1)
    if root in ("conv1", "bn1", "fc"):
        return {"conv1": "stem.0.", "bn1": "stem.1.", "fc": "head.2."}[root] + rest
    block, tail = rest.split(".", 1)
    if wrapped_bn and tail.startswith(wrapped_bn + "."):
        tail = f"{wrapped_bn}.0.{tail[len(wrapped_bn) + 1:]}"
    return f"stages.{int(root[len('layer'):]) - 1}.{int(block) + stage_input}.{tail}"


@pytest.mark.parametrize("output_stride", [32, 8])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_parameter_names_are_unchanged(arch: str, output_stride: int):
    ours = torchvision_resnet(10, arch=arch, output_stride=output_stride).state_dict()
    theirs = getattr(torchvision.models, arch)(num_classes=10).state_dict()
    assert list(ours) == [torchvision_key_in_ours(key) for key in theirs]
    assert {k: v.shape for k, v in ours.items()} == {torchvision_key_in_ours(k): v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("value", [4, 64, "8", True, None])
def test_bad_output_stride_is_one_line(value):
    with pytest.raises(ConfigError) as error:
        torchvision_resnet(10, output_stride=value)
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
# Pretrained weights: matched by module, after c3exp's init, attention and other classifiers left alone.


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    state_dict = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state_dict, path)
    return path, state_dict


@pytest.mark.parametrize(
    "attn,stage_input,wrapped_bn,new",
    [
        (None, False, None, "no module new"),
        (C3_STAGE_INPUT, True, None, "4 modules new (stages.0.0, stages.1.0, stages.2.0, stages.3.0)"),
        (SE_EVERY_BLOCK, False, "bn2", "8 modules new (stages.0.0.bn2.1, stages.0.1.bn2.1, stages.1.0.bn2.1, ..., stages.3.1.bn2.1)"),
    ],
    ids=["none", "c3-stage_input", "se-every_block"],
)
@pytest.mark.parametrize("num_classes", [1000, 21])
def test_pretrained_file_fills_every_backbone_tensor(
    resnet18_weights, caplog, attn, stage_input: bool, wrapped_bn: str | None, new: str, num_classes: int
):
    path, weights = resnet18_weights
    torch.manual_seed(0)
    fresh = torchvision_resnet(num_classes, attn, "resnet18").state_dict()
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="c3exp.models.pretrained"):
        loaded = torchvision_resnet(num_classes, attn, "resnet18", weights=str(path)).state_dict()
    skip_fc = num_classes != 1000
    from_file = {torchvision_key_in_ours(k, stage_input, wrapped_bn): v for k, v in weights.items() if not (skip_fc and k.startswith("fc."))}
    for key, value in loaded.items():
        torch.testing.assert_close(value, from_file.get(key, fresh[key]), rtol=0, atol=0, msg=key)
    assert len(from_file) < len(loaded) or attn is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "c3exp.models.pretrained"]
    assert line == f"pretrained weights {path}: {new}" + (", fc skipped (1000 vs 21 classes)" if skip_fc else "")


def test_pretrained_file_may_hold_a_state_dict_entry(resnet18_weights, tmp_path: Path):
    path, weights = resnet18_weights
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": weights, "epoch": 3}, wrapped)
    model = torchvision_resnet(1000, arch="resnet18", weights=str(wrapped))
    torch.testing.assert_close(model.stem[0].weight, weights["conv1.weight"], rtol=0, atol=0)


def test_pretrained_weights_of_another_arch_are_one_line(resnet18_weights):
    path, _ = resnet18_weights
    with pytest.raises(ConfigError) as error:
        torchvision_resnet(10, arch="resnet50", weights=str(path))
    message = str(error.value)
    assert error.value.key == "model.weights" and "resnet50" in message and "other shapes" in message
    assert "\n" not in message


def test_pretrained_weights_path_must_exist(tmp_path: Path):
    with pytest.raises(ConfigError) as error:
        torchvision_resnet(10, weights=str(tmp_path / "missing.pth"))
    assert error.value.key == "model.weights" and "\n" not in str(error.value)


def test_pretrained_weights_file_must_be_a_state_dict(tmp_path: Path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a torch file")
    with pytest.raises(ConfigError) as error:
        torchvision_resnet(10, weights=str(junk))
    assert error.value.key == "model.weights" and "\n" not in str(error.value)


def test_imagenet_weights_offline_is_one_line():
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    if (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).exists():
        pytest.skip("torch hub's cache already holds the weights: nothing to download")
    with pytest.raises(DataNotFoundError) as error:
        torchvision_resnet(10, arch="resnet18", weights="imagenet")
    message = str(error.value)
    assert "model.weights=/path/to/resnet18.pth" in message and url in message and "\n" not in message


# ----------------------------------------------------------------------------------------------
# C3 at ImageNet sizes: any map size against the block's size is the naive nearest resize, both ways.


def naive_c3(block: C3Block, x: torch.Tensor) -> torch.Tensor:
    """Nearest-resize to the block size, the block's messages there, nearest-resize back, add, ReLU."""
    small = F.interpolate(x, size=block.spatial_size, mode="nearest")
    return torch.relu(x + F.interpolate(block.message(small), size=x.shape[-2:], mode="nearest"))


@pytest.mark.parametrize(
    "map_size,block_size",
    [((81, 81), 16), ((41, 41), 8), ((41, 81), 16), ((80, 80), 16), ((64, 64), 16), ((8, 8), 16)],
    ids=["81-16", "41-8", "41x81-16", "80-16", "64-16", "8-16"],
)
def test_c3_any_map_size_equals_the_naive_resize(map_size: tuple[int, int], block_size: int):
    torch.manual_seed(0)
    block = C3Block(16, (block_size, block_size)).double()
    x = torch.randn(2, 16, *map_size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 16, *map_size, dtype=torch.float64)
    results = []
    for forward in (block, lambda inputs: naive_c3(block, inputs)):
        out = forward(x)
        grads = torch.autograd.grad((out * weight).sum(), [x, *block.parameters()])
        results.append((out, grads))
    (out, grads), (expected, expected_grads) = results
    torch.testing.assert_close(out, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
