"""C3: the Cross-channel Communication block (Yang et al., NeurIPS 2019).

Every channel's spatial map is one vector of A = H*W positions. An MLP over positions encodes it,
channels exchange messages weighted by how close their mean encodings are, an MLP decodes the
messages and the result is added back to the input (out = ReLU(x + decoded)).

Everything is batched: tiles and channel groups are folded into the batch axis, so one pass of two
MLPs, one batched matrix product and one softmax serves them all (no Python loops, no
gather/scatter, nothing data-dependent for torch.compile to break on).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.attention.common import check_divides
from c3exp.errors import ConfigError, check

RESIZE_MODES = ("interpolate", "tile")


def channel_groups(channels: int, max_group_channels: int) -> int:
    """The fewest equal groups of at most `max_group_channels` channels (official code: 512)."""
    return next(g for g in range(1, channels + 1) if channels % g == 0 and channels // g <= max_group_channels)


def resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """F.interpolate(mode="nearest"), by slicing or broadcasting when the factors are integers.

    Integer factors are the common case (32x32 <-> 16x16) and avoid the interpolation kernels.
    """
    height, width = x.shape[-2:]
    out_height, out_width = size
    if (height, width) == (out_height, out_width):
        return x
    if height % out_height == 0 and width % out_width == 0:
        return x[:, :, :: height // out_height, :: width // out_width]
    if out_height % height == 0 and out_width % width == 0:
        batch, channels = x.shape[:2]
        repeated = x[:, :, :, None, :, None].expand(
            batch, channels, height, out_height // height, width, out_width // width
        )
        return repeated.reshape(batch, channels, out_height, out_width)
    return F.interpolate(x, size=size, mode="nearest")


def to_tiles(x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B * tiles, C, tile_h * tile_w): non-overlapping tiles folded into the batch."""
    batch, channels, height, width = x.shape
    tile_h, tile_w = tile
    if height % tile_h or width % tile_w:
        raise ConfigError(
            "attn.options.spatial_sizes",
            [tile_h, tile_w],
            f"a divisor of the {height}x{width} feature map when attn.options.resize=tile "
            "(or use attn.options.resize=interpolate)",
        )
    rows, cols = height // tile_h, width // tile_w
    tiles = x.reshape(batch, channels, rows, tile_h, cols, tile_w).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(batch * rows * cols, channels, tile_h * tile_w)


def from_tiles(tiles: torch.Tensor, shape: torch.Size, tile: tuple[int, int]) -> torch.Tensor:
    """Inverse of `to_tiles`: put every tile back in its place in a (B, C, H, W) map."""
    batch, channels, height, width = shape
    tile_h, tile_w = tile
    rows, cols = height // tile_h, width // tile_w
    grid = tiles.reshape(batch, rows, cols, channels, tile_h, tile_w).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, channels, height, width)


def position_mlp(positions: int, hidden: int) -> nn.Sequential:
    """A -> A/r -> A over the last axis; the official Conv1d over A written as the Linear it equals."""
    return nn.Sequential(nn.Linear(positions, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, positions))


class C3Block(nn.Module):
    """Cross-channel communication on maps of `spatial_size`; other sizes are resized or tiled.

    resize="interpolate" (official training path): nearest-resize the map to the block size, compute
    the decoded messages there, nearest-resize them back and add them to the full-resolution input.
    resize="tile": run the block on every non-overlapping tile of the block size at once.
    """

    is_attention = True

    def __init__(
        self,
        channels: int,
        spatial_size: tuple[int, int] | list[int],
        reduction: int = 8,
        resize: str = "interpolate",
        max_group_channels: int = 512,
        bn: bool = True,
        detach: bool = False,
    ):
        super().__init__()
        check(is_spatial_size(spatial_size), "attn.options.spatial_sizes", spatial_size, "[H, W] with positive integers")
        check(resize in RESIZE_MODES, "attn.options.resize", resize, RESIZE_MODES)
        check(
            isinstance(max_group_channels, int) and max_group_channels >= 1,
            "attn.options.max_group_channels",
            max_group_channels,
            "a positive integer (512 in the official code)",
        )
        check(isinstance(bn, bool), "attn.options.bn", bn, "true or false")
        check(isinstance(detach, bool), "attn.options.detach", detach, "true or false")
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        positions = self.spatial_size[0] * self.spatial_size[1]
        check_divides(reduction, positions, "positions A = H*W")
        self.resize = resize
        self.detach = detach
        self.groups = channel_groups(channels, max_group_channels)
        self.encoder = position_mlp(positions, positions // reduction)
        self.decoder = position_mlp(positions, positions // reduction)
        # BN over the A positions, statistics over every (sample, tile, channel) row.
        self.norm = nn.BatchNorm1d(positions) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize == "tile":
            message = self.message(x)
        else:
            message = resize_nearest(self.message(resize_nearest(x, self.spatial_size)), x.shape[-2:])
        # ReLU written as the threshold op, whose backward keeps its input rather than its output:
        # blocks that add the shortcut in place (torchvision's `out += identity`) then stay correct.
        return F.threshold(x + message, 0.0, 0.0)

    def message(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded messages for every tile of the block size in `x`, in place: (B, C, H, W)."""
        tiles = to_tiles(x, self.spatial_size)
        rows, channels, positions = tiles.shape
        grouped = tiles.reshape(rows * self.groups, channels // self.groups, positions)
        decoded = self.communicate(grouped).reshape(rows * channels, positions)
        return from_tiles(self.norm(decoded).reshape(rows, channels, positions), x.shape, self.spatial_size)

    def communicate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, A) -> (N, C, A): encode, pass messages between the C channels of each row, decode."""
        encoded = self.encoder(x)
        summary = encoded.mean(dim=-1, dtype=torch.promote_types(encoded.dtype, torch.float32))
        if self.detach:
            summary = summary.detach()
        # Affinity and softmax in (at least) float32 whatever the autocast dtype: the squared
        # differences underflow/overflow quickly in half precision.
        score = -(summary[:, :, None] - summary[:, None, :]).square()
        attention = score.softmax(dim=1).to(encoded.dtype)  # normalised over the sender i
        messages = attention.transpose(1, 2) @ encoded  # row j gathers sum_i attention[i, j] * x_i
        return self.decoder(messages)


def is_spatial_size(value: object) -> bool:
    """A [H, W] pair of positive integers."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    )
