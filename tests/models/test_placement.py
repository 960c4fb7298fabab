"""Where attention goes (c3exp/models/placement.py): after the last BN of a block, and C3 blocks no larger
than the maps they run on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from c3exp.errors import ConfigError
from c3exp.tasks import build_network
from c3exp.utils.complexity import count_params
from tests.conftest import assert_names_bad_setting, build, hydra_compose as compose, run_main

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
    tv = build("model=resnet50", "attn=se", "data.num_classes=10").eval()
    block = tv.stages[2][0]
    (gate,) = [module for module in block.modules() if getattr(module, "is_attention", False)]
    bn3 = dict(block.named_modules()).get("bn3.0", block.bn3)  # the block's last BN, however the gate hangs on it
    seen.clear()
    bn3.register_forward_hook(lambda module, args, out: seen.update(bn3=out.clone()), prepend=True)
    gate.register_forward_hook(lambda module, args, out: seen.update(gate_input=args[0], gate=out.clone()))
    block.downsample.register_forward_hook(lambda module, args, out: seen.update(shortcut=out))
    block.register_forward_hook(lambda module, args, out: seen.update(block=out))
    with torch.no_grad():
        tv(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(seen["gate_input"], seen["bn3"], rtol=0, atol=0)
    torch.testing.assert_close(seen["block"], torch.relu(seen["gate"] + seen["shortcut"]))


# ----------------------------------------------------------------------------------------------
# C3 blocks no larger than the maps they run on: C3's MLPs are sized by the block (A = H*W positions),
# so a larger block only upsamples its map, for many times the parameters.


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
        (("data=digits", "attn.options.spatial_sizes=[[64,64],[64,64],[64,64]]"), [[64, 64], [64, 64], [64, 64]],
         "at 32 px inputs (data.image_size): stage 1 32x32, stage 2 32x32, stage 3 16x16"),
        # one dimension too large is enough
        (("attn.options.spatial_sizes=[[16,16],[16,16],[8,32]]",), [[16, 16], [16, 16], [8, 32]],
         "at 32 px inputs (data.image_size): stage 1 32x32, stage 2 32x32, stage 3 16x16"),
        # the maps are the placement's: blocks that fit the stage inputs do not fit the block outputs
        (("attn.placement=every_block", "attn.options.spatial_sizes=[[32,32],[32,32],[16,16]]"),
         [[32, 32], [32, 32], [16, 16]], "at 32 px inputs (data.image_size): stage 1 32x32, stage 2 16x16, stage 3 8x8"),
        # and the data's input size: the CIFAR blocks, which fit 32 px inputs, do not fit 8 px ones
        (("data.image_size=8", "attn.options.spatial_sizes=[[16,16],[16,16],[8,8]]"), [[16, 16], [16, 16], [8, 8]],
         "at 8 px inputs (data.image_size): stage 1 8x8, stage 2 8x8, stage 3 4x4"),
    ],
)
def test_c3_blocks_larger_than_their_maps_are_a_config_error(overrides: tuple[str, ...], value: list, maps: str):
    with pytest.raises(ConfigError) as error:
        build("attn=c3", *overrides)
    assert_names_bad_setting(str(error.value), "attn.options.spatial_sizes", value)
    assert error.value.allowed.endswith(f" {maps}")


def test_c3_defaults_too_large_for_the_inputs_are_named_as_the_defaults():
    with pytest.raises(ConfigError) as error:
        build("attn=c3", "data.image_size=8")  # the CIFAR network's official blocks are for 32 px, not 8
    assert_names_bad_setting(str(error.value), "attn.options.spatial_sizes", [[16, 16], [16, 16], [8, 8]])
    assert error.value.allowed.endswith(
        " at 8 px inputs (data.image_size): stage 1 8x8, stage 2 8x8, stage 3 4x4 (these are the model's default "
        "blocks, as attn.options.spatial_sizes is null: set one [H, W] per stage)"
    )


@pytest.mark.parametrize("task,data,key", [("segmentation", "shapes", "crop_size"), ("detection", "shapes_detection", "min_size")])
def test_c3_blocks_are_checked_at_the_input_size_segmentation_and_detection_train_on(task: str, data: str, key: str):
    overrides = [f"task={task}", f"data={data}", "attn=c3", "attn.options.spatial_sizes=[[16,16],[16,16],[32,32]]"]
    if task == "detection":
        overrides += ["task.net.fpn_channels=16", "task.net.representation_size=16"]
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
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    assert line.endswith(" at 32 px inputs (data.image_size): stage 1 32x32, stage 2 32x32, stage 3 16x16")
    assert_names_bad_setting(line, "attn.options.spatial_sizes", [[64, 64], [64, 64], [64, 64]])
    assert not run_dir.exists()


# ----------------------------------------------------------------------------------------------
# attn.stages: which stages get attention (1-based, negative from the end, S + 1 = after the last
# stage for stage_input: the C3 ablations' location 4), and every_other_block.


def attention_per_stage(model: nn.Module) -> list[int]:
    return [sum(getattr(m, "is_attention", False) for m in stage.modules()) for stage in model.stages]


@pytest.mark.parametrize(
    "overrides,per_stage",
    [
        (("attn=se", "attn.stages=[2,3]"), [0, 3, 3]),
        (("attn=se", "attn.stages=[-1]"), [0, 0, 3]),
        (("attn=se", "attn.placement=every_other_block"), [2, 2, 2]),  # blocks 1 and 3 of 3
        (("attn=se", "attn.placement=first_block", "attn.stages=[1,-1]"), [1, 0, 1]),
        (("attn=c3", "attn.stages=[1,2,3,4]"), [1, 1, 2]),  # location 4 ends the last stage
        (("attn=c3", "attn.stages=[4]"), [0, 0, 1]),
    ],
)
def test_attn_stages_select_where_attention_goes(overrides: tuple[str, ...], per_stage: list[int]):
    assert attention_per_stage(build("model=resnet20", *overrides)) == per_stage


def test_location_four_runs_on_the_last_stage_output():
    model = build("model=resnet20", "attn=c3", "attn.stages=[4]").eval()
    tail = model.stages[2][-1]
    assert getattr(tail, "is_attention", False) and tail.spatial_size == (8, 8)  # the last stage's default block
    seen = {}
    model.stages[2][-2].register_forward_hook(lambda module, args, out: seen.update(last_block=out))
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(features, tail(seen["last_block"]))
    assert count_params(model) - count_params(build("model=resnet20", "attn=none")) == c3_params(8, 8)


def test_location_four_takes_its_own_block_size():
    model = build("model=resnet20", "attn=c3", "attn.stages=[4]", sizes_override([[16, 16], [16, 16], [8, 8], [4, 4]]))
    assert model.stages[2][-1].spatial_size == (4, 4)


@pytest.mark.parametrize(
    "overrides,value",
    [
        (("attn=se", "attn.stages=[4]"), [4]),  # no location 4 outside stage_input
        (("attn=c3", "attn.stages=[5]"), [5]),
        (("attn=se", "attn.stages=[0]"), [0]),
        (("attn=se", "attn.stages=[1,1]"), [1, 1]),
        (("attn=se", "attn.stages=[]"), []),
        (("attn=se", "attn.stages=2"), 2),
    ],
)
def test_bad_attn_stages_are_one_line(overrides: tuple[str, ...], value: list[int] | int):
    with pytest.raises(ConfigError) as error:
        build("model=resnet20", *overrides)
    assert_names_bad_setting(str(error.value), "attn.stages", value)
    assert error.value.allowed.startswith("null (every stage)")


def test_gc_default_placement_is_the_last_three_stages():
    per_stage = attention_per_stage(build("model=resnet50", "attn=gc", "data.num_classes=10"))
    assert per_stage == [0, 4, 6, 3]  # GCNet's c3-c5, every block


def test_nonlocal_default_placement_is_the_papers_five_blocks_on_resnet50():
    per_stage = attention_per_stage(build("model=resnet50", "attn=nonlocal", "data.num_classes=10"))
    assert per_stage == [0, 2, 3, 0]  # 2 in res3 and 3 in res4, every other block


def test_attention_blocks_keep_their_own_initialisation_inside_networks():
    model = build("model=resnet20", "attn=nonlocal")
    blocks = [m for m in model.modules() if getattr(m, "is_attention", False)]
    assert blocks and all(torch.count_nonzero(b.bn.weight) == 0 for b in blocks)  # each starts as the identity
    assert all(float(b.theta.weight.detach().std()) < 0.02 for b in blocks)  # N(0, 0.01), not Kaiming
    gc = [m for m in build("model=resnet20", "attn=gc").modules() if getattr(m, "is_attention", False)]
    assert gc and all(torch.count_nonzero(b.transform[-1].weight) == 0 for b in gc)


def test_every_c3_block_is_checked_against_its_own_map():
    """Location 5 of ResNet-50 sees layer4's 7x7 output and gets a 4x4 block; the stage-4 input block (8x8 on
    14x14) must not be measured against that 7x7 map."""
    model = build("model=resnet50", "attn=c3", "attn.stages=[1,2,3,4,5]", "data=imagenet")
    blocks = [m for m in model.stages.modules() if getattr(m, "is_attention", False)]
    assert [b.spatial_size for b in blocks] == [(16, 16), (16, 16), (16, 16), (8, 8), (4, 4)]
    with pytest.raises(ConfigError, match=r"stage 4 7x7"):  # a 8x8 block on the 7x7 map of location 5
        build("model=resnet50", "attn=c3", "attn.stages=[1,2,3,4,5]", "data=imagenet",
              sizes_override([[16, 16], [16, 16], [16, 16], [8, 8], [8, 8]]))
