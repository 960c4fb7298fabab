"""benchmarks/c3_breakdown.py, the cost breakdown of a C3 block: its variants and its block clock."""
from __future__ import annotations

import time

import torch

from c3exp.attention import C3Block


def test_c3_breakdown_takes_the_block_apart_and_runs():
    """benchmarks/c3_breakdown.py: each variant is the part it names."""
    from benchmarks.c3_breakdown import VARIANTS, in_step_table, message_table, network, step_table

    def first_c3(variant: str) -> C3Block:
        return next(m for m in network("resnet20", variant).modules() if isinstance(m, C3Block))

    x = torch.randn(2, 16, 32, 32)
    torch.testing.assert_close(first_c3("relu")(x), x.relu())
    upsampled = x[:, :, ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(first_c3("resize")(x), (x + upsampled).relu())
    assert not torch.allclose(first_c3("c3")(x), x.relu())
    lines = step_table("resnet20", steps=2, batch_size=4)
    assert [line.split()[0] for line in lines[1:]] == [*VARIANTS, "messages"]
    assert [line.split()[1] for line in message_table("resnet20", batch_size=4, repeats=1)[1:]] == [
        "4x16x16x16", "4x16x16x16", "4x32x8x8"
    ]
    in_step = in_step_table("resnet20", steps=2, batch_size=4)
    assert [line.split()[0] for line in in_step[1:4]] == ["1", "2", "3"] and in_step[4].startswith("all C3 blocks")
    assert all(float(value) > 0 for line in in_step[1:4] for value in line.split()[1:])


def test_block_clock_times_a_blocks_forward_and_backward_inside_a_step():
    """The backward interval opens when the output's gradient is complete and closes with the input's."""
    from benchmarks.c3_breakdown import BlockClock

    class Sleepy(torch.autograd.Function):
        @staticmethod
        def forward(x):
            time.sleep(0.02)
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            time.sleep(0.1)
            return grad * 2

    class Block(torch.nn.Module):
        def forward(self, x):
            return Sleepy.apply(x)

    block = Block()
    clock = BlockClock([block])
    x = torch.randn(3, requires_grad=True)
    (block(x * 1.0) * 3).sum().backward()
    assert 0.02 <= clock.seconds("forward", 0) < 0.1 <= clock.seconds("backward", 0) < 1.0
