"""The contract of an attn config's `_target_`: called as Class(channels=C, **options), plus spatial_size=(H, W)
when its signature declares one (weights sized by the map); returns a (N, C, H, W) -> (N, C, H, W) module whose
`reset_parameters()`, if any, runs after the network's initialisation."""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

Size = tuple[int, int]


class AttentionBlock(Protocol):
    """A block class (or function) as an attn config's `_target_` names it: see the module docstring."""

    def __call__(self, channels: int, **options: Any) -> nn.Module: ...
