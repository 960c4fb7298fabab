"""create_attn and the block registry (c3exp/attention/__init__.py): every registered block, and bad settings."""
from __future__ import annotations

import pytest
import torch

from c3exp.attention import ATTENTION_BLOCKS, create_attn
from c3exp.errors import ConfigError


def test_create_attn_none_is_none():
    assert create_attn("none", 16) is None


@pytest.mark.parametrize("name,cls", list(ATTENTION_BLOCKS.items()))
def test_create_attn_builds_marked_modules(name, cls):
    block = create_attn(name, 32, (8, 8))
    assert isinstance(block, cls) and block.is_attention is True


@pytest.mark.parametrize("name", list(ATTENTION_BLOCKS))
def test_attention_accepts_channels_last(name: str):
    block = create_attn(name, 16, (4, 4))
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), block(x))


@pytest.mark.parametrize(
    "name,options,key",
    [
        ("sk", {}, "attn.name"),
        ("se", {"kernel_size": 7}, "attn.options.kernel_size"),
        ("c3", {"groups": 2}, "attn.options.groups"),
        ("c3", {"resize": "bilinear"}, "attn.options.resize"),
        ("c3", {"reduction": 0}, "attn.options.reduction"),
        ("se", {"reduction": 3}, "attn.options.reduction"),
        ("cbam", {"kernel_size": 4}, "attn.options.kernel_size"),
        ("c3", {"bn": "yes"}, "attn.options.bn"),
        ("c3", {"max_group_channels": 0}, "attn.options.max_group_channels"),
        ("c3", {"fold_messages": 1}, "attn.options.fold_messages"),
    ],
)
def test_create_attn_rejects_bad_settings_by_key(name, options, key):
    with pytest.raises(ConfigError) as error:
        create_attn(name, 16, (8, 8), **options)
    assert error.value.key == key
