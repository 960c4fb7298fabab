"""Where attention goes (c3exp/models/placement.py): after the last BN of a block, and C3 blocks no larger
than the maps they run on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from c3exp.errors import ConfigError
from c3exp.tasks import build_network
from c3exp.utils.complexity import count_params
from tests.conftest import build, hydra_compose as compose, run_main

pytestmark = pytest.mark.usefixtures("one_thread")


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


# ----------------------------------------------------------------------------------------------
# C3 blocks no larger than the maps they run on: C3's MLPs are sized by the block (A = H*W positions),
# so a larger block only upsamples its map, for many times the parameters.


BLOCK_RULE = "is not valid: expected blocks no larger than the feature maps they run on, in height and in width,"


def c3_params(height: int, width: int, reduction: int = 8) -> int:
    """Closed form of one C3 block's parameters: encoder and decoder A -> A/r -> A with biases, BN over the A positions."""
    positions = height * width
    hidden = positions // reduction
    return 2 * (2 * positions * hidden + hidden + positions) + 2 * positions


def sizes_override(sizes: list[list[int]]) -> str:
    return "attn.options.spatial_sizes=" + str(sizes).replace(" ", "")


@pytest.mark.parametrize(
    "placement,sizes,blocks",
    [
        ("stage_input", None, (1, 1, 1)),  # the CIFAR defaults 16/16/8 on the 32/32/16 stage inputs
        ("every_block", None, (3, 3, 3)),  # ... on the 32/16/8 block outputs
        ("first_block", None, (1, 1, 1)),
        ("stage_input", [[32, 32], [32, 32], [16, 16]], (1, 1, 1)),  # blocks as large as their maps
        ("every_block", [[32, 16], [16, 8], [8, 8]], (3, 3, 3)),  # as large in one dimension only
    ],
)
def test_c3_blocks_that_fit_their_maps_build_with_the_closed_form_parameter_count(
    placement: str, sizes: list[list[int]] | None, blocks: tuple[int, ...]
):
    overrides = ["data=digits", "attn=c3", f"attn.placement={placement}", *([sizes_override(sizes)] if sizes else [])]
    added = count_params(build(*overrides)) - count_params(build("data=digits"))
    expected = sum(count * c3_params(*size) for count, size in zip(blocks, sizes or [[16, 16], [16, 16], [8, 8]]))
    assert added == expected
    if sizes is None and placement == "stage_input":
        assert added == 70032  # Table 1's +0.07M


@pytest.mark.parametrize(
    "overrides,value,maps",
    [
        # 64x64 blocks on 32 px digits: 25.5M parameters instead of 0.34M
        (("data=digits", "attn.options.spatial_sizes=[[64,64],[64,64],[64,64]]"), "[[64, 64], [64, 64], [64, 64]]",
         "at 32 px inputs (data.image_size): stage 1 32x32, stage 2 32x32, stage 3 16x16"),
        # one dimension too large is enough
        (("attn.options.spatial_sizes=[[16,16],[16,16],[8,32]]",), "[[16, 16], [16, 16], [8, 32]]",
         "at 32 px inputs (data.image_size): stage 1 32x32, stage 2 32x32, stage 3 16x16"),
        # the maps are the placement's: blocks that fit the stage inputs do not fit the block outputs
        (("attn.placement=every_block", "attn.options.spatial_sizes=[[32,32],[32,32],[16,16]]"),
         "[[32, 32], [32, 32], [16, 16]]", "at 32 px inputs (data.image_size): stage 1 32x32, stage 2 16x16, stage 3 8x8"),
        # and the data's input size: the CIFAR blocks, which fit 32 px inputs, do not fit 8 px ones
        (("data.image_size=8", "attn.options.spatial_sizes=[[16,16],[16,16],[8,8]]"), "[[16, 16], [16, 16], [8, 8]]",
         "at 8 px inputs (data.image_size): stage 1 8x8, stage 2 8x8, stage 3 4x4"),
    ],
)
def test_c3_blocks_larger_than_their_maps_are_a_config_error(overrides: tuple[str, ...], value: str, maps: str):
    with pytest.raises(ConfigError) as error:
        build("attn=c3", *overrides)
    assert error.value.key == "attn.options.spatial_sizes"
    assert str(error.value) == f"attn.options.spatial_sizes={value} {BLOCK_RULE} {maps}"


def test_c3_defaults_too_large_for_the_inputs_are_named_as_the_defaults():
    with pytest.raises(ConfigError) as error:
        build("model=resnet18", "attn=c3", "data.num_classes=10")  # torchvision's blocks are for 224 px, not 32
    assert str(error.value) == (
        f"attn.options.spatial_sizes=[[16, 16], [16, 16], [16, 16], [8, 8]] {BLOCK_RULE} at 32 px inputs "
        "(data.image_size): stage 1 8x8, stage 2 8x8, stage 3 4x4, stage 4 2x2 (these are the model's default "
        "blocks, as attn.options.spatial_sizes is null: set one [H, W] per stage)"
    )


@pytest.mark.parametrize("task,data,key", [("segmentation", "shapes", "crop_size"), ("detection", "shapes_detection", "min_size")])
def test_c3_blocks_are_checked_at_the_input_size_segmentation_and_detection_train_on(task: str, data: str, key: str):
    overrides = [f"task={task}", f"data={data}", "attn=c3", "attn.options.spatial_sizes=[[16,16],[16,16],[32,32]]"]
    if task == "detection":
        overrides += ["task.network.fpn_channels=16", "task.network.representation_size=16"]
    net = build_network(compose(*overrides))  # 64 px: stage inputs 64/64/32
    assert max(getattr(m, "spatial_size", (0, 0)) for m in net.modules()) == (32, 32)
    with pytest.raises(ConfigError) as error:
        build_network(compose(*overrides, f"data.{key}=32"))
    assert str(error.value).endswith(f"at 32 px inputs (data.{key}): stage 1 32x32, stage 2 32x32, stage 3 16x16")


def test_c3_blocks_larger_than_their_maps_are_one_line_from_the_cli(monkeypatch, capsys, tmp_path):
    run_dir = tmp_path / "run"
    args = ["data=digits", "trainer=cpu", "debug=fast", "trainer.enable_progress_bar=false", "attn=c3",
            "attn.options.spatial_sizes=[[64,64],[64,64],[64,64]]", f"hydra.run.dir={run_dir}"]
    code, err = run_main(monkeypatch, capsys, args)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: attn.options.spatial_sizes=[[64, 64], [64, 64], [64, 64]] {BLOCK_RULE} at 32 px inputs "
        "(data.image_size): stage 1 32x32, stage 2 32x32, stage 3 16x16"
    )
    assert not run_dir.exists()
