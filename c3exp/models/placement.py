"""Where attention modules go in a network, read from the `attn` config group."""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from c3exp.attention import ATTENTION_NAMES, create_attn
from c3exp.attention.c3 import is_spatial_size
from c3exp.errors import ConfigError, check
from c3exp.utils.complexity import data_input_shape
from c3exp.utils.modes import evaluating

PLACEMENTS = ("every_block", "first_block", "stage_input")
ATTN_KEYS = ("name", "placement", "options")

Size = tuple[int, int]


@dataclass(frozen=True)
class AttentionPlan:
    """The attention name, its placement, its options and the block spatial size of every stage.

    every_block: after the last BN of every residual block, before the add (SE and CBAM default);
    first_block: the same in the first block of each stage only;
    stage_input: one module before each stage (the C3 default, as the official training code does).
    """

    name: str = "none"
    placement: str = "every_block"
    options: Mapping[str, Any] = field(default_factory=dict)
    spatial_sizes: tuple[Size, ...] = ()

    @classmethod
    def from_config(cls, attn: Mapping[str, Any] | None, default_spatial_sizes: Sequence[Size]) -> AttentionPlan:
        """Validate `attn` (keys name, placement, options); options.spatial_sizes null -> the model's own."""
        attn = dict(attn or {})
        for key in attn:
            check(key in ATTN_KEYS, f"attn.{key}", attn[key], f"a key of the attn group: {', '.join(ATTN_KEYS)}")
        name = attn.get("name", "none")
        placement = attn.get("placement", "every_block")
        check(name in ATTENTION_NAMES, "attn.name", name, ATTENTION_NAMES)
        check(placement in PLACEMENTS, "attn.placement", placement, PLACEMENTS)
        options = dict(attn.get("options") or {})
        sizes = options.pop("spatial_sizes", None)
        return cls(name, placement, options, _stage_sizes(sizes, default_spatial_sizes))

    def in_block(self, stage: int, block: int, channels: int) -> nn.Module | None:
        """The module for block `block` of stage `stage` (after its last BN), or None."""
        wanted = self.placement == "every_block" or (self.placement == "first_block" and block == 0)
        return self._create(stage, channels) if wanted else None

    def at_stage_input(self, stage: int, channels: int) -> nn.Module | None:
        """The module that runs before stage `stage`, or None."""
        return self._create(stage, channels) if self.placement == "stage_input" else None

    def _create(self, stage: int, channels: int) -> nn.Module | None:
        return create_attn(self.name, channels, self.spatial_sizes[stage], **self.options)


def _stage_sizes(sizes: Sequence[Sequence[int]] | None, default: Sequence[Size]) -> tuple[Size, ...]:
    if sizes is None:
        return tuple(default)
    valid = isinstance(sizes, (list, tuple)) and len(sizes) == len(default) and all(map(is_spatial_size, sizes))
    if not valid:
        raise ConfigError(
            "attn.options.spatial_sizes",
            sizes,
            f"null or a list of {len(default)} [H, W] pairs, one per stage (default {[list(s) for s in default]})",
        )
    return tuple(tuple(size) for size in sizes)


# Where data_input_shape reads the input size from, in its order of preference.
INPUT_SIZE_KEYS = ("crop_size", "min_size", "image_size")


def check_blocks_fit_maps(net: nn.Module, data: Any, spatial_sizes: Sequence[Sequence[int]] | None) -> None:
    """Every block of a map-sized attention (C3) no larger, in height and in width, than the map it runs on.

    C3 runs on any map (nearest-resized to its block), but its MLPs are sized by the block: a block
    larger than its map only upsamples it, for up to (block/map)^4 times the weights (64x64 blocks on
    32 px CIFAR inputs: 25.5M parameters instead of 0.34M). The maps are those of the data's input
    size (`data_input_shape`, as the complexity counts use), measured by one forward of shape-only
    tensors through `net` (placements, strides and dilations all count), the blocks stood in by
    identities. `net` may be on the meta device; `spatial_sizes` is the attn.options value (null:
    the model's defaults), named in the error.
    """
    blocks = {
        block: stage
        for stage, modules in enumerate(getattr(net, "stages", ()))
        for block in modules.modules()
        if getattr(block, "is_attention", False) and hasattr(block, "spatial_size")
    }
    key = next((key for key in INPUT_SIZE_KEYS if data.get(key)), None)
    if not blocks or key is None:
        return
    input_shape = data_input_shape(data)
    maps = stage_map_sizes(net, blocks, input_shape)
    fits = (
        all(side <= map_side for side, map_side in zip(block.spatial_size, maps[stage]))
        for block, stage in blocks.items()
        if stage in maps  # every block runs in these networks; one that does not has no map to fit
    )
    if all(fits):
        return
    maps_text = ", ".join(f"stage {stage + 1} {height}x{width}" for stage, (height, width) in sorted(maps.items()))
    allowed = (
        f"blocks no larger than the feature maps they run on, in height and in width, at {input_shape[-1]} px "
        f"inputs (data.{key}): {maps_text}"
    )
    if spatial_sizes is None:
        spatial_sizes = [list(size) for _, size in sorted({stage: block.spatial_size for block, stage in blocks.items()}.items())]
        allowed += " (these are the model's default blocks, as attn.options.spatial_sizes is null: set one [H, W] per stage)"
    raise ConfigError("attn.options.spatial_sizes", spatial_sizes, allowed)


def stage_map_sizes(net: nn.Module, blocks: Mapping[nn.Module, int], input_shape: tuple[int, ...]) -> dict[int, Size]:
    """The smallest (height, width) any of `blocks` (module -> stage) receives in one eval forward, per stage.

    The blocks are stood in by identities for the forward (they keep the shape): the probe measures
    the maps, it does not run the blocks. Parameters and buffers are replaced by meta stand-ins, so
    nothing is computed or allocated whatever device `net` is on.
    """
    seen: dict[int, Size] = {}

    def stand_in(stage: int):
        def forward(x: torch.Tensor) -> torch.Tensor:
            height, width = x.shape[-2:]
            known = seen.get(stage, (height, width))
            seen[stage] = (min(known[0], height), min(known[1], width))
            return x

        return forward

    for block, stage in blocks.items():
        block.forward = stand_in(stage)  # an instance attribute: nn.Module.__call__ finds it before the class's
    stand_ins = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in itertools.chain(net.named_parameters(), net.named_buffers())
    }
    reference = next(net.parameters(), None)
    dtype = torch.get_default_dtype() if reference is None else reference.dtype
    try:
        with evaluating(net):
            functional_call(net, stand_ins, (torch.empty(input_shape, device="meta", dtype=dtype),))
    finally:
        for block in blocks:
            del block.forward
    return seen
