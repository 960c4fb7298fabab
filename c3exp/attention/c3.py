"""C3: the Cross-channel Communication block (Yang et al., NeurIPS 2019): each channel is a vector of A = H*W
positions; channels exchange MLP-encoded messages weighted by mean-encoding closeness, out = ReLU(x + decoded).
Tiles and channel groups fold into the batch: no Python loops or data-dependent ops for torch.compile to break on."""
from __future__ import annotations

import functools
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.attention.common import bottleneck_mlp
from c3exp.errors import ConfigError
from c3exp.schema import PositiveInt, SpatialSize


def channel_groups(channels: int, max_group_channels: int) -> int:
    """The fewest equal groups of at most `max_group_channels` channels (official code: 512)."""
    return next(g for g in range(1, channels + 1) if channels % g == 0 and channels // g <= max_group_channels)


def integer_factors(size: torch.Size | tuple[int, int], block: tuple[int, int]) -> tuple[int, int] | None:
    """(fh, fw) when a map of `size` is exactly fh x fw blocks of `block` pixels, else None."""
    (height, width), (block_h, block_w) = size, block
    if height % block_h or width % block_w:
        return None
    return height // block_h, width // block_w


def _blocks(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """(B, C, h*fh, w*fw) as a (B, C, h, fh, w, fw) view, whatever the memory format."""
    batch, channels, height, width = x.shape
    return x.view(batch, channels, height // fh, fh, width // fw, fw)


def strided_resize(x: torch.Tensor) -> bool:
    """Resize maps of whole multiples of the block size by _Subsample and _UpsampleAdd (fewer passes over memory: faster
    on CPUs), or by F.interpolate (a kernel each way and in backward: fewer launches, what a GPU step is bound by)."""
    return x.device.type == "cpu"


class _Subsample(torch.autograd.Function):
    """x -> (x[:, :, ::fh, ::fw], x) in one node, so the gradient is formed once (slicing builds zero maps per axis)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fh: int, fw: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.factors = fh, fw
        # copied rows first, then columns: two vectorised copies beat one strided in both axes
        rows = _blocks(x, fh, fw)[:, :, :, 0]  # (B, C, h, w, fw)
        return (rows.contiguous() if fh > 1 else rows)[..., 0].contiguous(), x.view_as(x)

    @staticmethod
    def backward(ctx, grad_small: torch.Tensor, grad_identity: torch.Tensor):
        # grad_identity[:, :, ::fh, ::fw] += grad_small in place (only _UpsampleAdd's backward holds this fresh
        # gradient of the block's ReLU), as whole-row adds of grad_small spread over fw columns
        fh, fw = ctx.factors
        if fw == 1:
            spread = grad_small[..., None]
        else:
            spread = grad_small.new_zeros(*grad_small.shape, fw)
            spread[..., 0] = grad_small
        _blocks(grad_identity, fh, fw)[:, :, :, 0] += spread
        return grad_identity, None, None


class _UpsampleAdd(torch.autograd.Function):
    """x + `small` nearest-upsampled by (fh, fw), never materialised; backward adds strided views (faster on CPUs)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, small: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
        ctx.factors = fh, fw
        batch, channels, height, width = small.shape
        if not x.is_contiguous():  # channels_last: the broadcast's inner runs are the channels
            return (_blocks(x, fh, fw) + small.reshape(batch, channels, height, 1, width, 1)).reshape(x.shape)
        # Row-major: repeat columns first so the add broadcasts whole rows (single values: inner loops fw long).
        columns = small.new_empty(batch, channels, height, 1, width, fw)
        for offset in range(fw):
            columns[..., offset] = small.reshape(batch, channels, height, 1, width)
        rows = x.view(batch, channels, height, fh, width * fw)
        return (rows + columns.view(batch, channels, height, 1, width * fw)).view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        blocks = _blocks(grad, *ctx.factors)
        rows = functools.reduce(torch.add, blocks.unbind(3))  # (B, C, h, w, fw): fh - 1 adds of long runs
        return grad, functools.reduce(torch.add, rows.unbind(-1)), None, None


def to_tiles(x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B * tiles, C, tile_h * tile_w): non-overlapping tiles folded into the batch."""
    batch, channels, height, width = x.shape
    tile_h, tile_w = tile
    factors = integer_factors((height, width), tile)
    if factors is None:
        raise ConfigError("attn.options.spatial_sizes", [tile_h, tile_w], f"a divisor of the {height}x{width} feature "
                          "map when attn.options.resize=tile (or use attn.options.resize=interpolate)")
    rows, cols = factors
    tiles = x.reshape(batch, channels, rows, tile_h, cols, tile_w).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(batch * rows * cols, channels, tile_h * tile_w)


def from_tiles(tiles: torch.Tensor, shape: torch.Size, tile: tuple[int, int]) -> torch.Tensor:
    """Inverse of `to_tiles`: put every tile back in its place in a (B, C, H, W) map."""
    batch, channels, height, width = shape
    tile_h, tile_w = tile
    grid = tiles.reshape(batch, height // tile_h, width // tile_w, channels, tile_h, tile_w).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, channels, height, width)


class C3Block(nn.Module):
    """C3 on maps of `spatial_size`; other sizes are nearest-resized (official path) or tiled (resize=tile).
    message_passing, encoder_decoder and stack=k are the official ablations; stack holds the other k - 1 blocks."""

    is_attention = True

    def __init__(
        self,
        channels: int,
        spatial_size: SpatialSize,
        reduction: Annotated[PositiveInt, "the MLPs are A -> max(1, A // reduction) -> A over the A = H*W positions"],
        resize: Literal["interpolate", "tile"],
        max_group_channels: Annotated[PositiveInt, "512 in the official code"],
        bn: bool,
        detach: bool,
        fold_messages: bool,
        message_passing: bool,
        encoder_decoder: bool,
        stack: Annotated[PositiveInt, "C3 blocks, each with its own weights, in sequence at one location"],
    ):
        super().__init__()
        positions = spatial_size[0] * spatial_size[1]
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.resize = resize
        self.detach = detach
        self.fold_messages = fold_messages  # irrelevant without encoder and decoder: nothing to fold
        self.message_passing = message_passing
        self.encoder_decoder = encoder_decoder
        self.groups = channel_groups(channels, max_group_channels)
        hidden = max(1, positions // reduction)  # SE-style rounding: any reduction fits any block size
        # A -> A/r -> A over the last axis: the official Conv1d over A written as the Linear it equals
        self.encoder = bottleneck_mlp(positions, hidden) if encoder_decoder else None
        self.decoder = bottleneck_mlp(positions, hidden) if encoder_decoder else None
        # BN over the A positions, statistics over every (sample, tile, channel) row.
        self.norm = nn.BatchNorm1d(positions) if bn else nn.Identity()
        # an empty list adds no state_dict keys
        options = dict(reduction=reduction, resize=resize, max_group_channels=max_group_channels, bn=bn, detach=detach,
                       fold_messages=fold_messages, message_passing=message_passing, encoder_decoder=encoder_decoder)
        self.stacked = nn.ModuleList(C3Block(channels, spatial_size, **options, stack=1) for _ in range(stack - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x + self.message(x) if self.resize == "tile" else self.resized_residual(x)
        # threshold's backward keeps its input, not output: in-place shortcut adds (`out += identity`) stay correct
        out = F.threshold(total, 0.0, 0.0)
        for block in self.stacked:
            out = block(out)
        return out

    def resized_residual(self, x: torch.Tensor) -> torch.Tensor:
        """x + the messages of x nearest-resized to the block size, nearest-resized back."""
        factors = integer_factors(x.shape[-2:], self.spatial_size)
        if factors == (1, 1):
            return x + self.message(x)
        if factors is not None and strided_resize(x):
            small, identity = _Subsample.apply(x, *factors)
            return _UpsampleAdd.apply(identity, self.message(small), *factors)
        # any sizes (8x8 maps for a 16x16 block, 6x10 ones), and whole multiples on GPUs: the general resize
        small = F.interpolate(x, size=self.spatial_size, mode="nearest")
        return x + F.interpolate(self.message(small), size=x.shape[-2:], mode="nearest")

    def message(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded messages for every tile of the block size in `x`, in place: (B, C, H, W)."""
        tiles = to_tiles(x, self.spatial_size)
        rows, channels, positions = tiles.shape
        grouped = tiles.reshape(rows * self.groups, channels // self.groups, positions)
        decoded = self.communicate(grouped).reshape(rows * channels, positions)
        return from_tiles(self.norm(decoded).reshape(rows, channels, positions), x.shape, self.spatial_size)

    def communicate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, A) -> (N, C, A): encode, pass messages between the C channels of each row, decode."""
        if self.encoder is None:  # encoder_decoder=False: the raw position vectors are the encodings
            if not self.message_passing:
                return x
            summary = x.to(torch.promote_types(x.dtype, torch.float32)).mean(-1)
            return self.gather_weights(summary, x.dtype) @ x
        first, relu, second = self.encoder
        hidden = relu(first(x))
        if not self.message_passing:  # identity affinity: each channel keeps its own encoding
            return self.decode_hidden_messages(hidden) if self.fold_messages else self.decoder(second(hidden))
        gather = self.gather_weights(linear_mean(second, hidden), hidden.dtype)  # = second(hidden).mean(-1)
        if self.fold_messages:
            return self.decode_hidden_messages(gather @ hidden)
        return self.decoder(gather @ second(hidden))  # row j = sum_i attention[i, j] * encoded_i

    def gather_weights(self, summary: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(N, C) summaries -> (N, C, C) gather weights, in >= float32: squared differences overflow in half."""
        if self.detach:
            summary = summary.detach()
        score = -(summary[:, :, None] - summary[:, None, :]).square()
        # attention[i, j] is normalised over sender i; the score is symmetric, so softmax(-1) is its transpose.
        return score.softmax(dim=-1).to(dtype)

    def decode_hidden_messages(self, messages: torch.Tensor) -> torch.Tensor:
        """decoder(encoder's output layer(messages)), those two layers merged: gather weights sum to 1, so
        sum a_i (W h_i + b) = W sum a_i h_i + b; messages pass A/r wide, about half the multiply-accumulates."""
        _, _, encoder_out = self.encoder
        decoder_in, relu, decoder_out = self.decoder
        weight = decoder_in.weight @ encoder_out.weight
        bias = decoder_in.weight @ encoder_out.bias + decoder_in.bias
        return decoder_out(relu(F.linear(messages, weight, bias)))


def linear_mean(linear: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """linear(hidden).mean(-1) in >= float32 via averaged weights: no A-wide reduction or gradient."""
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    return (hidden.to(dtype) * linear.weight.to(dtype).mean(0)).sum(-1) + linear.bias.to(dtype).mean()

