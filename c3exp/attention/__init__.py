"""Channel-attention blocks and the factory that builds the block an attn config names: the attn configs are the
registry (`_target_`), so a YAML on Hydra's searchpath adds a block of one's own (contract: protocol.py)."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from c3exp.attention.c3 import C3Block
from c3exp.attention.cbam import CBAM
from c3exp.attention.protocol import AttentionBlock, Size
from c3exp.attention.se import SqueezeExcite
from c3exp.errors import check, imported
from c3exp.paths import config_dir
from c3exp.schema import check_complete, check_settings, parameters

# The paper's three blocks by name here; every block by the path its attn config's `_target_` gives.
__all__ = ["ATTENTION_NAMES", "AttentionBlock", "CBAM", "C3Block", "SqueezeExcite", "block_factory", "block_of",
           "create_attn", "sized_by_map"]

#: c3exp's own attn configs in the order tables list them (the paper's blocks, then the zoo); a block needs no entry.
ATTENTION_NAMES = ("none", "se", "cbam", "c3", "eca", "gc", "coord", "srm", "ge", "triplet", "simam", "nonlocal")


@functools.cache
def own_blocks() -> dict[str, str | None]:
    """c3exp's attn configs: name -> the block its conf/attn/<name>.yaml names (None: no block)."""
    return {path.stem: OmegaConf.load(path).get("_target_") for path in sorted((config_dir() / "attn").glob("*.yaml"))}


def block_of(attn: Mapping[str, Any] | None) -> str | None:
    """An attn config's `_target_`, else its `name`; the name labels results, so it must match the target's config."""
    attn = attn or {}
    name = attn.get("name", "none")
    if "_target_" not in attn:
        return name
    target, blocks = attn["_target_"], own_blocks()
    labels = [label for label, block in blocks.items() if block == target] or ([] if name in blocks else [name])
    check(name in labels, "attn.name", name, f"{' or '.join(labels) or 'a name of its own'} for attn._target_={target}")
    return target


def block_factory(block: str | None) -> AttentionBlock | None:
    """The block `block` names: a `_target_` path, or the name of c3exp's conf/attn/<name>.yaml; None for none."""
    if block is not None and "." not in block:
        check(block in own_blocks(), "attn.name", block, list(own_blocks()))
        block = own_blocks()[block]
    if block is None:
        return None
    factory = imported(block, "attn._target_")
    takes_channels = callable(factory) and "channels" in parameters(factory)
    check(takes_channels, "attn._target_", block, "a block class taking `channels` (c3exp/attention/protocol.py)")
    return factory


def sized_by_map(block: str | None) -> bool:
    """Whether the block's signature takes a `spatial_size`: its weights depend on the map size (C3)."""
    factory = block_factory(block)
    return factory is not None and "spatial_size" in parameters(factory)


def create_attn(block: str | None, channels: int, spatial_size: Size | None = None, **options: Any) -> nn.Module | None:
    """Block `block` for `channels` channels, None for none; only blocks sized by the map get `spatial_size`."""
    factory = block_factory(block)
    if factory is None:
        return None
    check_settings(options, factory, "attn.options.", supplied=("channels", "spatial_size"))
    check_complete(options, factory, "attn.options.", supplied=("channels", "spatial_size"))
    if "spatial_size" in parameters(factory):
        check(spatial_size is not None, "attn.options.spatial_sizes", None, f"a [H, W] per stage for {block}")
        options["spatial_size"] = spatial_size
    module = factory(channels=channels, **options)
    module.is_attention = True
    if "spatial_size" in options and not hasattr(module, "spatial_size"):
        module.spatial_size = tuple(spatial_size)  # what check_blocks_fit_maps measures against the maps
    return module
