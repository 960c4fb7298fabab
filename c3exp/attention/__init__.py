"""Channel-attention blocks (one module per file) and the factory the networks build them with."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from c3exp.attention.c3 import C3Block
from c3exp.attention.cbam import CBAM
from c3exp.attention.coord import CoordAttention
from c3exp.attention.eca import ECA
from c3exp.attention.gc import GlobalContext
from c3exp.attention.ge import GatherExcite
from c3exp.attention.nonlocal_block import NonLocalBlock
from c3exp.attention.se import SqueezeExcite
from c3exp.attention.simam import SimAM
from c3exp.attention.srm import SRM
from c3exp.attention.triplet import TripletAttention
from c3exp.errors import ConfigError, check_keywords

__all__ = [
    "ATTENTION_BLOCKS", "ATTENTION_NAMES", "CBAM", "C3Block", "CoordAttention", "ECA", "GatherExcite", "GlobalContext",
    "NonLocalBlock", "SRM", "SimAM", "SqueezeExcite", "TripletAttention", "create_attn", "sized_by_map",
]

ATTENTION_BLOCKS: dict[str, Callable[..., nn.Module]] = {
    "se": SqueezeExcite,
    "cbam": CBAM,
    "c3": C3Block,
    # the zoo of later channel-attention blocks, each with its paper's defaults
    "eca": ECA,
    "gc": GlobalContext,
    "coord": CoordAttention,
    "srm": SRM,
    "ge": GatherExcite,
    "triplet": TripletAttention,
    "simam": SimAM,
    "nonlocal": NonLocalBlock,
}
ATTENTION_NAMES = ("none", *ATTENTION_BLOCKS)


def create_attn(
    name: str, channels: int, spatial_size: tuple[int, int] | None = None, **options: Any
) -> nn.Module | None:
    """Build attention `name` for `channels` channels; None for "none" (its options are ignored).

    `spatial_size` is the block's own map size, used by blocks whose weights depend on it (C3) and
    ignored by the others. Unknown names and options are user errors, reported with their config key.
    """
    if name == "none":
        return None
    if name not in ATTENTION_BLOCKS:
        raise ConfigError("attn.name", name, ATTENTION_NAMES)
    block = ATTENTION_BLOCKS[name]
    check_keywords(options, block, "attn.options.", f"an option of {name}", supplied=("channels", "spatial_size"))
    if sized_by_map(name):
        if spatial_size is None:
            raise ConfigError("attn.options.spatial_sizes", None, f"a [H, W] per stage for {name}")
        options["spatial_size"] = spatial_size
    return block(channels, **options)


def sized_by_map(name: str) -> bool:
    """Whether attention `name` takes a block `spatial_size` that its weights depend on (C3)."""
    block = ATTENTION_BLOCKS.get(name)
    return block is not None and "spatial_size" in inspect.signature(block).parameters
