"""The attention blocks against their equations, their parameter formulas and their symmetries."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from c3exp.attention import CBAM, C3Block, SqueezeExcite, create_attn
from c3exp.attention.c3 import channel_groups, resize_nearest
from c3exp.errors import ConfigError


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, BN running statistics included, so nothing is an identity by chance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))
    return module


# ----------------------------------------------------------------------------------------------
# A deliberately naive C3, straight from the paper's equations: python loops, float64.


class NaiveC3:
    """The C3 equations with explicit loops over samples, tiles, groups and channels.

    Takes a C3Block's weights; BN in training mode uses the batch statistics over every
    (sample, tile, channel) row of each position, as BatchNorm1d over the A positions does.
    """

    def __init__(self, block: C3Block):
        self.block = block
        self.size = block.spatial_size
        self.groups = block.groups

    def mlp(self, mlp: nn.Sequential, v: torch.Tensor) -> torch.Tensor:
        first, _, second = mlp
        hidden = [torch.relu(sum(first.weight[k, a] * v[a] for a in range(v.shape[0])) + first.bias[k]) for k in range(first.out_features)]
        return torch.stack([sum(second.weight[a, k] * hidden[k] for k in range(len(hidden))) + second.bias[a] for a in range(second.out_features)])

    def communicate(self, channels: list[torch.Tensor]) -> list[torch.Tensor]:
        encoded = [self.mlp(self.block.encoder, v) for v in channels]
        summary = [e.mean() for e in encoded]
        if self.block.detach:
            summary = [m.detach() for m in summary]
        n = len(channels)
        score = [[-((summary[i] - summary[j]) ** 2) for j in range(n)] for i in range(n)]
        attention = [[torch.exp(score[i][j]) / sum(torch.exp(score[k][j]) for k in range(n)) for j in range(n)] for i in range(n)]
        messages = [sum(attention[i][j] * encoded[i] for i in range(n)) for j in range(n)]
        return [self.mlp(self.block.decoder, z) for z in messages]

    def tiles(self, x: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        h, w = self.size
        return [(r, c, x[:, :, r : r + h, c : c + w]) for r in range(0, x.shape[2], h) for c in range(0, x.shape[3], w)]

    def normalize(self, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        norm = self.block.norm
        if isinstance(norm, nn.Identity):
            return rows
        stacked = torch.stack(rows)
        if norm.training:
            mean, var = stacked.mean(dim=0), stacked.var(dim=0, unbiased=False)
        else:
            mean, var = norm.running_mean, norm.running_var
        return [(r - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias for r in rows]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        source = x if self.block.resize == "tile" else F.interpolate(x, size=self.size, mode="nearest")
        batch, channels = x.shape[:2]
        per_group = channels // self.groups
        decoded = {}  # (sample, row, col, channel) -> decoded message of that tile and channel
        for b in range(batch):
            for r, c, tile in self.tiles(source):
                for g in range(self.groups):
                    members = range(g * per_group, (g + 1) * per_group)
                    outputs = self.communicate([tile[b, k].reshape(h * w) for k in members])
                    decoded.update({(b, r, c, k): out for k, out in zip(members, outputs)})
        keys = list(decoded)
        decoded = dict(zip(keys, self.normalize([decoded[k] for k in keys])))
        message = torch.zeros_like(source)
        for (b, r, c, k), vector in decoded.items():
            message[b, k, r : r + h, c : c + w] = vector.reshape(h, w)
        if self.block.resize != "tile":
            message = F.interpolate(message, size=x.shape[-2:], mode="nearest")
        return torch.relu(x + message)


C3_CASES = {
    "block size": dict(channels=6, shape=(8, 8), size=(8, 8)),
    "resize": dict(channels=6, shape=(8, 8), size=(4, 4)),
    "resize up": dict(channels=4, shape=(4, 4), size=(8, 8)),
    "resize odd": dict(channels=4, shape=(6, 10), size=(4, 4)),
    "tile": dict(channels=6, shape=(8, 12), size=(4, 4), resize="tile"),
    "groups": dict(channels=8, shape=(8, 8), size=(4, 4), max_group_channels=4),
    "groups + tile": dict(channels=6, shape=(8, 8), size=(4, 4), max_group_channels=2, resize="tile"),
    "no bn": dict(channels=6, shape=(8, 8), size=(4, 4), bn=False),
    "detach": dict(channels=6, shape=(8, 8), size=(4, 4), detach=True),
    "A-wide messages": dict(channels=6, shape=(8, 8), size=(4, 4), fold_messages=False),
    "A-wide messages + tile + groups": dict(
        channels=6, shape=(8, 8), size=(4, 4), resize="tile", max_group_channels=3, fold_messages=False
    ),
}


def make_c3(channels: int, size: tuple[int, int], **options) -> C3Block:
    return randomize(C3Block(channels, size, reduction=4, **options)).double()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", C3_CASES)
def test_c3_matches_naive_equations(case: str, training: bool):
    spec = dict(C3_CASES[case])
    channels, shape, size = spec.pop("channels"), spec.pop("shape"), spec.pop("size")
    block = make_c3(channels, size, **spec).train(training)
    x = torch.randn(2, channels, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = NaiveC3(block)(x)
        actual = block(x)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fold_messages", [True, False], ids=["folded", "A-wide"])
@pytest.mark.parametrize("detach", [False, True])
def test_c3_gradients_match_naive_equations(detach: bool, fold_messages: bool):
    block = make_c3(6, (4, 4), detach=detach, fold_messages=fold_messages)
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = torch.autograd.grad(NaiveC3(block)(x).square().sum(), list(block.parameters()))
    actual = torch.autograd.grad(block(x).square().sum(), list(block.parameters()))
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-9)


def test_c3_detach_changes_gradients_not_outputs():
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    blocks = [make_c3(6, (4, 4), detach=detach) for detach in (False, True)]
    outputs = [block(x) for block in blocks]
    torch.testing.assert_close(outputs[0], outputs[1])
    grads = [torch.autograd.grad(out.square().sum(), block.encoder[0].weight)[0] for out, block in zip(outputs, blocks)]
    assert not torch.allclose(grads[0], grads[1])


def test_c3_tile_needs_multiples_of_block_size():
    block = C3Block(4, (4, 4), reduction=4, resize="tile")
    with pytest.raises(ConfigError, match="attn.options.spatial_sizes.*6x8"):
        block(torch.randn(1, 4, 6, 8))


@pytest.mark.parametrize(
    "shape,size",
    [((32, 32), (16, 16)), ((24, 24), (8, 8)), ((28, 28), (4, 4)), ((8, 8), (16, 16)), ((4, 4), (12, 12)),
     ((7, 7), (28, 28)), ((8, 4), (4, 8)), ((10, 10), (4, 4)), ((6, 6), (4, 4)), ((16, 32), (4, 4))],
)
def test_resize_nearest_equals_interpolate(shape, size):
    x = torch.randn(2, 3, *shape)
    torch.testing.assert_close(resize_nearest(x, size), F.interpolate(x, size=size, mode="nearest"), rtol=0, atol=0)


@pytest.mark.parametrize("channels,limit,groups", [(8, 4, 2), (16, 512, 1), (1024, 512, 2), (640, 512, 2), (2048, 512, 4), (7, 4, 7)])
def test_channel_groups(channels, limit, groups):
    assert channel_groups(channels, limit) == groups


# ----------------------------------------------------------------------------------------------
# Symmetry: C3 talks across channels the same way whatever their order; SE and CBAM do not.


def permutation_error(block: nn.Module, channels: int) -> float:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, channels, 8, 8, generator=generator)
    permutation = torch.randperm(channels, generator=generator)
    with torch.no_grad():
        return (block(x[:, permutation]) - block(x)[:, permutation]).abs().max().item()


@pytest.mark.parametrize("resize", ["interpolate", "tile"])
def test_c3_is_channel_permutation_equivariant(resize: str):
    block = randomize(C3Block(16, (4, 4), reduction=4, resize=resize))
    assert permutation_error(block, 16) < 1e-5


@pytest.mark.parametrize("block", [SqueezeExcite(16, 4), CBAM(16, 4)], ids=["se", "cbam"])
def test_se_and_cbam_are_not_channel_permutation_equivariant(block: nn.Module):
    assert permutation_error(randomize(block).eval(), 16) > 1e-2


# ----------------------------------------------------------------------------------------------
# Parameter counts: the closed forms behind Table 1.


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels,reduction", [(16, 8), (64, 8), (640, 16)])
def test_se_params(channels, reduction):
    assert n_params(SqueezeExcite(channels, reduction)) == 2 * channels * channels // reduction


@pytest.mark.parametrize("channels,reduction", [(16, 16), (64, 16), (256, 8)])
def test_cbam_params(channels, reduction):
    hidden = channels // reduction
    assert n_params(CBAM(channels, reduction)) == 2 * channels * hidden + hidden + channels + 2 * 49 + 2


@pytest.mark.parametrize("size,reduction", [((16, 16), 8), ((8, 8), 8), ((14, 14), 4)])
@pytest.mark.parametrize("bn", [True, False])
def test_c3_params_depend_only_on_positions(size, reduction, bn):
    positions = size[0] * size[1]
    mlp = 2 * positions * positions // reduction + positions // reduction + positions
    expected = 2 * mlp + 2 * positions * bn
    assert n_params(C3Block(16, size, reduction, bn=bn)) == n_params(C3Block(640, size, reduction, bn=bn)) == expected


def test_c3_paper_sizes_add_about_0_07m():
    total = sum(n_params(C3Block(16, size)) for size in [(16, 16), (16, 16), (8, 8)])
    assert total == 70032 and round(total / 1e6, 2) == 0.07


# ----------------------------------------------------------------------------------------------
# Speed-related contracts: compile without graph breaks, channels_last, float32 affinity.


@pytest.mark.parametrize("resize", ["interpolate", "tile"])
def test_c3_compiles_without_graph_breaks(resize: str):
    block = C3Block(8, (4, 4), reduction=4, resize=resize, max_group_channels=4)
    x = torch.randn(2, 8, 8, 8)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), block(x))


@pytest.mark.parametrize("name", ["se", "cbam", "c3"])
def test_attention_accepts_channels_last(name: str):
    block = create_attn(name, 16, (4, 4))
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), block(x))


class SoftmaxDtypes(TorchFunctionMode):
    """Records the dtype of every softmax input."""

    def __init__(self):
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "softmax":
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def test_c3_affinity_in_float32_under_autocast():
    block = C3Block(16, (4, 4), reduction=4).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), SoftmaxDtypes() as spy:
        out = block(x)
    assert spy.dtypes == [torch.float32]
    assert out.dtype == torch.float32  # the residual keeps the input's precision
    torch.testing.assert_close(out, block(x), rtol=0.05, atol=0.05)


# ----------------------------------------------------------------------------------------------
# The factory.


def test_create_attn_none_is_none():
    assert create_attn("none", 16) is None


@pytest.mark.parametrize("name,cls", [("se", SqueezeExcite), ("cbam", CBAM), ("c3", C3Block)])
def test_create_attn_builds_marked_modules(name, cls):
    block = create_attn(name, 32, (8, 8))
    assert isinstance(block, cls) and block.is_attention is True


@pytest.mark.parametrize(
    "name,options,key",
    [
        ("sk", {}, "attn.name"),
        ("se", {"kernel_size": 7}, "attn.options.kernel_size"),
        ("c3", {"groups": 2}, "attn.options.groups"),
        ("c3", {"resize": "bilinear"}, "attn.options.resize"),
        ("c3", {"reduction": 3}, "attn.options.reduction"),
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


def test_c3_needs_a_spatial_size():
    with pytest.raises(ConfigError, match="attn.options.spatial_sizes"):
        create_attn("c3", 16)
