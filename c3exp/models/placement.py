"""Where attention modules go in a network, read from the `attn` config group."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from c3exp.attention import ATTENTION_NAMES, create_attn
from c3exp.attention.c3 import is_spatial_size
from c3exp.errors import ConfigError, check

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
