"""C3: the Cross-channel Communication block (Yang et al., NeurIPS 2019).

Every channel's spatial map is one vector of A = H*W positions. An MLP over positions encodes it,
channels exchange messages weighted by how close their mean encodings are, an MLP decodes the
messages and the result is added back to the input (out = ReLU(x + decoded)).

Everything is batched: tiles and channel groups are folded into the batch axis, so one pass of two
MLPs, one batched matrix product and one softmax serves them all (no Python loops, no
gather/scatter, nothing data-dependent for torch.compile to break on). Integer-factor nearest
resizes around the block (the official 32x32 -> 16x16 path) are two small autograd functions
whose backward passes avoid full-size zero maps and strided reductions, the costly part on CPUs.

By default the messages travel in the encoder's A/r-wide hidden space (`fold_messages`): a
softmax-weighted sum of affine maps is the affine map of the weighted sum, so the encoder's output
layer moves behind message passing and merges with the decoder's input layer. Same function, same
parameters, about half the multiply-accumulates; `fold_messages=False` runs the paper's A-wide form.

The official ablation code's axes are options, so that one config key switches each off:
`message_passing=False` (identity affinity: every channel decodes only its own encoding),
`encoder_decoder=False` (no MLPs: the channels exchange their raw position vectors) and `stack=k`
(k full C3 blocks, each with its own weights, one after another at one location). The hidden width
is max(1, A // reduction), as SE-style blocks round, so the block also fits 7x7 or 1x1 maps.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.errors import ConfigError, check, is_int

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


def _first_of_blocks(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """x[:, :, ::fh, ::fw] as a contiguous copy: first the kept rows (long contiguous runs), then their columns.

    Two vectorised copies beat one copy strided in both axes on maps that are no longer in cache.
    """
    rows = _blocks(x, fh, fw)[:, :, :, 0]  # (B, C, h, w, fw)
    return (rows.contiguous() if fh > 1 else rows)[..., 0].contiguous()


def _add_to_first_of_blocks(grad: torch.Tensor, small: torch.Tensor, fh: int, fw: int) -> None:
    """grad[:, :, ::fh, ::fw] += small in place, as whole-row adds of `small` spread over fw columns."""
    if fw == 1:
        spread = small[..., None]
    else:
        spread = small.new_zeros(*small.shape, fw)
        spread[..., 0] = small
    _blocks(grad, fh, fw)[:, :, :, 0] += spread


class _Subsample(torch.autograd.Function):
    """x -> (x[:, :, ::fh, ::fw] as a contiguous copy, x): the nearest downsampling and the residual input.

    Both uses of x go through this one node, so its gradient is formed once: the subsample's
    gradient is added into the residual's. Plain slicing would have autograd build a zero-filled
    map per sliced axis and then add a third full-size map.
    """

    @staticmethod
    def forward(x: torch.Tensor, fh: int, fw: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _first_of_blocks(x, fh, fw), x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.factors = inputs[1:]

    @staticmethod
    def backward(ctx, grad_small: torch.Tensor, grad_identity: torch.Tensor):
        # In place: C3Block feeds `identity` to _UpsampleAdd only, whose backward hands on the
        # fresh gradient of the block's ReLU, so no other node holds this tensor.
        _add_to_first_of_blocks(grad_identity, grad_small, *ctx.factors)
        return grad_identity, None, None


class _UpsampleAdd(torch.autograd.Function):
    """x + `small` nearest-upsampled by integer factors (fh, fw), the upsampled map never materialised.

    Backward sums each fh x fw block of the gradient by adding strided views; autograd's reduction
    of a broadcast over two non-contiguous axes costs several times more on CPUs.
    """

    @staticmethod
    def forward(x: torch.Tensor, small: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
        batch, channels, height, width = small.shape
        if not x.is_contiguous():  # channels_last: the broadcast's inner runs are the channels
            return (_blocks(x, fh, fw) + small.reshape(batch, channels, height, 1, width, 1)).reshape(x.shape)
        # Row-major maps: repeat the columns first (fw strided copies), so that the add broadcasts
        # whole rows; broadcasting single values makes TensorIterator's inner loops fw long.
        columns = small.new_empty(batch, channels, height, 1, width, fw)
        for offset in range(fw):
            columns[..., offset] = small.reshape(batch, channels, height, 1, width)
        rows = x.view(batch, channels, height, fh, width * fw)
        return (rows + columns.view(batch, channels, height, 1, width * fw)).view(x.shape)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.factors = inputs[2:]

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
        raise ConfigError(
            "attn.options.spatial_sizes",
            [tile_h, tile_w],
            f"a divisor of the {height}x{width} feature map when attn.options.resize=tile "
            "(or use attn.options.resize=interpolate)",
        )
    rows, cols = factors
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
    message_passing, encoder_decoder and stack are the paper's ablations (see the module docstring);
    with stack=k this block is the first of k and holds the other k - 1 in `stacked`.
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
        fold_messages: bool = True,
        message_passing: bool = True,
        encoder_decoder: bool = True,
        stack: int = 1,
    ):
        super().__init__()
        check(is_spatial_size(spatial_size), "attn.options.spatial_sizes", spatial_size, "[H, W] with positive integers")
        positions = spatial_size[0] * spatial_size[1]
        check(
            is_int(reduction) and reduction >= 1,
            "attn.options.reduction",
            reduction,
            f"a positive integer: the MLPs are A -> max(1, A // reduction) -> A, here A = H*W = {positions}",
        )
        check(resize in RESIZE_MODES, "attn.options.resize", resize, RESIZE_MODES)
        check(
            is_int(max_group_channels) and max_group_channels >= 1,
            "attn.options.max_group_channels",
            max_group_channels,
            "a positive integer (512 in the official code)",
        )
        for key, value in (("bn", bn), ("detach", detach), ("fold_messages", fold_messages),
                           ("message_passing", message_passing), ("encoder_decoder", encoder_decoder)):
            check(isinstance(value, bool), f"attn.options.{key}", value, "true or false")
        check(
            is_int(stack) and stack >= 1,
            "attn.options.stack",
            stack,
            "a positive integer: how many C3 blocks, each with its own weights, run in sequence at one location",
        )
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.resize = resize
        self.detach = detach
        self.fold_messages = fold_messages  # irrelevant without encoder and decoder: nothing to fold
        self.message_passing = message_passing
        self.encoder_decoder = encoder_decoder
        self.groups = channel_groups(channels, max_group_channels)
        hidden = max(1, positions // reduction)  # SE-style rounding: any reduction fits any block size
        # encoder_decoder=False: no MLPs at all, so the parameter count is BN's alone
        self.encoder = position_mlp(positions, hidden) if encoder_decoder else None
        self.decoder = position_mlp(positions, hidden) if encoder_decoder else None
        # BN over the A positions, statistics over every (sample, tile, channel) row.
        self.norm = nn.BatchNorm1d(positions) if bn else nn.Identity()
        # stack=k: the other k - 1 full blocks, run after this one (an empty list adds no state_dict keys)
        options = dict(reduction=reduction, resize=resize, max_group_channels=max_group_channels, bn=bn, detach=detach,
                       fold_messages=fold_messages, message_passing=message_passing, encoder_decoder=encoder_decoder)
        self.stacked = nn.ModuleList(C3Block(channels, spatial_size, **options) for _ in range(stack - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x + self.message(x) if self.resize == "tile" else self.resized_residual(x)
        # ReLU written as the threshold op, whose backward keeps its input rather than its output:
        # blocks that add the shortcut in place (torchvision's `out += identity`) then stay correct.
        out = F.threshold(total, 0.0, 0.0)
        for block in self.stacked:
            out = block(out)
        return out

    def resized_residual(self, x: torch.Tensor) -> torch.Tensor:
        """x + the messages of x nearest-resized to the block size, nearest-resized back."""
        factors = integer_factors(x.shape[-2:], self.spatial_size)
        if factors is None:  # e.g. 8x8 maps for a 16x16 block, or 6x10 ones: the general resize
            return x + resize_nearest(self.message(resize_nearest(x, self.spatial_size)), x.shape[-2:])
        if factors == (1, 1):
            return x + self.message(x)
        small, identity = _Subsample.apply(x, *factors)
        return _UpsampleAdd.apply(identity, self.message(small), *factors)

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
        """(N, C) channel summaries -> (N, C, C) weights, row j those channel j gathers the messages with.

        Affinity and softmax in (at least) float32 whatever the autocast dtype: the squared
        differences underflow/overflow quickly in half precision.
        """
        if self.detach:
            summary = summary.detach()
        score = -(summary[:, :, None] - summary[:, None, :]).square()
        # attention[i, j] is normalised over the sender i (softmax over dim 1); the score is
        # symmetric, so softmax over the last dim is its transpose: row j holds the weights channel
        # j gathers with, and one plain batched product passes the messages (no transposed operand).
        return score.softmax(dim=-1).to(dtype)

    def decode_hidden_messages(self, messages: torch.Tensor) -> torch.Tensor:
        """decoder(encoder's output layer(messages)) with those two adjacent linear layers merged.

        The gather weights of a channel sum to 1, so sum_i a_i (W h_i + b) = W (sum_i a_i h_i) + b:
        passing hidden encodings and mapping them afterwards equals passing the encodings (and an
        identity gather, message_passing=False, trivially so). The merged (A/r x A/r) layer is
        formed once per call, from the weights alone.
        """
        _, _, encoder_out = self.encoder
        decoder_in, relu, decoder_out = self.decoder
        weight = decoder_in.weight @ encoder_out.weight
        bias = decoder_in.weight @ encoder_out.bias + decoder_in.bias
        return decoder_out(relu(F.linear(messages, weight, bias)))


def linear_mean(linear: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """linear(hidden).mean(-1) in at least float32, from the narrow hidden layer rather than the A-wide output.

    The mean of a linear map is the map with averaged weights: no A-wide reduction, and no A-wide
    gradient of it added into the encodings' gradient in backward.
    """
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    return (hidden.to(dtype) * linear.weight.to(dtype).mean(0)).sum(-1) + linear.bias.to(dtype).mean()


def is_spatial_size(value: object) -> bool:
    """A [H, W] pair of positive integers."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    )
