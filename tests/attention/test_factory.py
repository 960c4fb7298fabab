"""create_attn and the registry, which is conf/attn/*.yaml (c3exp/attention/__init__.py): properties every block of it
has, tested once over all of them, and the errors of the factory itself."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.attention import ATTENTION_NAMES, block_factory, create_attn, sized_by_map
from c3exp.errors import ConfigError
from c3exp.paths import config_dir
from tests.conftest import randomize

CONFIGS = {path.stem: OmegaConf.to_container(OmegaConf.load(path)) for path in sorted((config_dir() / "attn").glob("*.yaml"))}
BLOCKS = [name for name, node in CONFIGS.items() if node["_target_"] is not None]


def from_config(name: str, channels: int = 16, **extra) -> torch.nn.Module:
    """The block conf/attn/<name>.yaml builds, with its options (a 4x4 block where it is sized by the map)."""
    options = {key: value for key, value in CONFIGS[name]["options"].items() if key != "spatial_sizes"}
    return create_attn(CONFIGS[name]["_target_"], channels, (4, 4), **options, **extra)


def test_the_configs_are_the_blocks_tables_list():
    assert sorted(CONFIGS) == sorted(ATTENTION_NAMES) and CONFIGS["none"]["_target_"] is None
    assert create_attn(None, 16) is None and create_attn("none", 16) is None


@pytest.mark.parametrize("name", BLOCKS)
def test_every_block_is_marked_and_keeps_the_shape_in_either_memory_format(name: str):
    block = randomize(from_config(name)).eval().double()  # float64: the two layouts sum in different orders
    assert isinstance(block, block_factory(CONFIGS[name]["_target_"])) and block.is_attention is True
    for shape in [(2, 16, 5, 6), (2, 16, 1, 9)]:  # odd sides, a one-pixel-high map
        x = torch.randn(shape, dtype=torch.float64)
        with torch.no_grad():
            y = block(x)
            torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), y)
        assert y.shape == x.shape


@pytest.mark.parametrize("name", BLOCKS)
def test_every_blocks_options_are_checked_by_name(name: str):
    with pytest.raises(ConfigError) as error:
        from_config(name, groups=2)
    assert error.value.key == "attn.options.groups" and "\n" not in str(error.value)
    assert all(option in error.value.allowed for option in CONFIGS[name]["options"] if option != "spatial_sizes")


def test_only_c3_is_sized_by_the_map():
    by_target = [name for name in BLOCKS if sized_by_map(CONFIGS[name]["_target_"])]
    assert by_target == ["c3"] == [name for name in BLOCKS if sized_by_map(name)]


@pytest.mark.parametrize(
    "block,options,key",
    [
        ("sk", {}, "attn.name"),  # a name: one of c3exp's configs
        ("c3exp.attention.sk.SelectiveKernel", {}, "attn._target_"),  # a path: importable
        ("torch.nn.Identity", {}, "attn._target_"),  # takes no `channels`
        ("se", {"reduction": 3}, "attn.options.reduction"),
        ("cbam", {"kernel_size": 4}, "attn.options.kernel_size"),
        ("c3", {"resize": "bilinear"}, "attn.options.resize"),
        ("c3", {"bn": "yes"}, "attn.options.bn"),
        ("c3", {"max_group_channels": 0}, "attn.options.max_group_channels"),
        ("c3", {"fold_messages": 1}, "attn.options.fold_messages"),
        ("nonlocal", {"reduction": 2, "scale": False}, "attn.options.sub_sample"),  # left out: no default but the YAML's
    ],
)
def test_create_attn_rejects_bad_settings_by_key(block, options, key):
    with pytest.raises(ConfigError) as error:
        create_attn(block, 16, (8, 8), **options)
    assert error.value.key == key
