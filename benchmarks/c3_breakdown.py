"""Where C3's share of a training step goes: the block taken apart piece by piece, interleaved.

    python benchmarks/c3_breakdown.py [--model resnet20] [--steps 20] [--batch 128] [--threads 2] [--in-step]

Every variant is the default `attn=c3` network with each C3 block replaced by a part of itself:
  none       no attention at all (the baseline network)
  relu       only the block's final ReLU, on the stage input
  resize     the resize, residual and ReLU machinery, with the messages replaced by the identity
  c3         the whole block
Full training steps (bench's `train_step`) of all variants alternate round-robin after a warm-up;
the table gives the fastest and median step and what each adds to the baseline's; the messages'
share is c3 minus resize. (Timing the messages without the rest of the block distorts them: any
way of keeping them in the graph without the residual changes the gradient they receive.) Then
each block's message computation runs forward and backward on its own, hot in cache. Last, the
C3 blocks' own forward and backward time inside full training steps of the default network
(`--in-step`, clocked by module and gradient hooks): on a shared machine whose speed drifts this
share of the step is far steadier than any difference of two networks' step times.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.attention.c3 import C3Block
from c3exp.bench.steps import interleave, timed, train_step
from c3exp.config import compose
from c3exp.models import build_model
from c3exp.tasks import ClassificationModule
from c3exp.utils.memory import keep_freed_memory

VARIANTS = ("none", "relu", "resize", "c3")


def relu_only(block: C3Block, x: torch.Tensor) -> torch.Tensor:
    return F.threshold(x, 0.0, 0.0)


def network(model: str, variant: str) -> nn.Module:
    """The network of `variant`: every C3 block's forward (relu) or message computation (resize) swapped on the instance."""
    torch.manual_seed(0)
    net = build_model(compose([f"model={model}", f"attn={'none' if variant == 'none' else 'c3'}"]))
    for block in (m for m in net.modules() if isinstance(m, C3Block)):
        if variant == "relu":
            block.forward = types.MethodType(relu_only, block)
        elif variant == "resize":
            block.message = lambda small: small * 1.0
    return net.train()


def step_of(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Callable[[], object]:
    """A training step of CIFAR-100 classification (the task's own loss) with the paper's SGD."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    module = ClassificationModule(net, num_classes=100, optimizer=torch.optim.SGD, label_smoothing=0.0, tta_flip=False,
                                  primary_metric=None, name="classification", channels_last=False, compile=False,
                                  cuda_graphs=False)
    return lambda: train_step(module, optimizer, batch, autocast_dtype=None)


def step_table(model: str, steps: int, batch_size: int) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(batch_size, 3, 32, 32, generator=generator), torch.randint(0, 100, (batch_size,), generator=generator))
    times = interleave([step_of(network(model, v), batch) for v in VARIANTS], warmup=3, count=steps, device="cpu")
    base_min, base_median = min(times[0]), statistics.median(times[0])
    lines = [f"{'variant':<9} {'fastest ms':>10} {'median ms':>10} {'+fastest ms':>12} {'+median ms':>11}"]
    for variant, values in zip(VARIANTS, times):
        fastest, median = min(values), statistics.median(values)
        lines.append(f"{variant:<9} {fastest * 1e3:>10.1f} {median * 1e3:>10.1f} "
                     f"{(fastest - base_min) * 1e3:>+12.1f} {(median - base_median) * 1e3:>+11.1f}")
    whole, resize = times[VARIANTS.index("c3")], times[VARIANTS.index("resize")]
    lines.append(f"{'messages':<9} {'= c3 - resize':>21} {(min(whole) - min(resize)) * 1e3:>+12.1f} "
                 f"{(statistics.median(whole) - statistics.median(resize)) * 1e3:>+11.1f}")
    return lines


def message_table(model: str, batch_size: int, repeats: int = 20) -> list[str]:
    """Forward + backward of each block's messages alone, on its subsampled input; fastest of `repeats`."""
    net = network(model, "c3")
    blocks = [m for m in net.modules() if isinstance(m, C3Block)]
    shapes: dict[C3Block, torch.Size] = {}

    def record_shape(block: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        shapes[block] = args[0].shape

    hooks = [block.register_forward_pre_hook(record_shape) for block in blocks]
    net(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    lines = [f"{'block':<5} {'input':>18} {'messages fwd+bwd ms':>20}"]
    for index, block in enumerate(blocks, 1):
        channels = shapes[block][1]
        small = torch.randn(batch_size, channels, *block.spatial_size, requires_grad=True)
        grad = torch.randn_like(small)
        inputs = [small, *block.parameters()]
        seconds = [timed(lambda: torch.autograd.backward(block.message(small), grad, inputs=inputs), "cpu")
                   for _ in range(repeats + 5)]
        shape = "x".join(map(str, (batch_size, channels, *block.spatial_size)))
        lines.append(f"{index:<5} {shape:>18} {min(seconds[5:]) * 1e3:>20.2f}")
    return lines


class BlockClock:
    """Wall-clock marks of each block's forward (module hooks) and backward (gradient hooks) in a step.

    Backward runs from the moment the gradient of a block's output is complete to the moment the
    gradient of its input is: exact for stage-input blocks, whose input feeds nothing else.
    """

    def __init__(self, blocks: list[nn.Module]):
        self.marks: dict[tuple[str, int, int], float] = {}
        for index, block in enumerate(blocks):
            block.register_forward_pre_hook(functools.partial(self._enter, index))
            block.register_forward_hook(functools.partial(self._leave, index))

    def _mark(self, phase: str, index: int, end: int) -> None:
        self.marks[(phase, index, end)] = time.perf_counter()

    def _enter(self, index: int, block: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._mark("forward", index, 0)
        if args[0].requires_grad:
            args[0].register_hook(lambda grad: self._mark("backward", index, 1))

    def _leave(self, index: int, block: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self._mark("forward", index, 1)
        output.register_hook(lambda grad: self._mark("backward", index, 0))

    def seconds(self, phase: str, index: int) -> float:
        return self.marks[(phase, index, 1)] - self.marks[(phase, index, 0)]


def in_step_table(model: str, steps: int, batch_size: int) -> list[str]:
    """Each C3 block's forward and backward inside full training steps, and all blocks' share of the step."""
    net = network(model, "c3")
    blocks = [m for m in net.modules() if isinstance(m, C3Block)]
    clock = BlockClock(blocks)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32, generator=generator)
    step = step_of(net, (images, torch.randint(0, 100, (batch_size,), generator=generator)))
    for _ in range(3):
        step()
    totals, per_block = [], []
    for _ in range(steps):
        totals.append(timed(step, "cpu"))
        per_block.append([[clock.seconds(phase, i) for phase in ("forward", "backward")] for i in range(len(blocks))])
    lines = [f"{'block':<5} {'forward ms':>11} {'backward ms':>12}   (medians over {steps} steps)"]
    for i in range(len(blocks)):
        forward, backward = (statistics.median(seconds[i][k] for seconds in per_block) * 1e3 for k in (0, 1))
        lines.append(f"{i + 1:<5} {forward:>11.2f} {backward:>12.2f}")
    own = [sum(map(sum, seconds)) for seconds in per_block]
    share = statistics.median(c / t for c, t in zip(own, totals))
    lines.append(f"all C3 blocks: median {statistics.median(own) * 1e3:.1f} ms (fastest {min(own) * 1e3:.1f}) of a "
                 f"{statistics.median(totals) * 1e3:.1f} ms step, {share:.1%} of it; step / (step - C3) = {1 / (1 - share):.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--in-step", action="store_true", help="only the C3 blocks' own time inside training steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    if not args.in_step:
        print("\n".join(step_table(args.model, args.steps, args.batch)))
        print()
        print("\n".join(message_table(args.model, args.batch)))
        print()
    print("\n".join(in_step_table(args.model, args.steps, args.batch)))


if __name__ == "__main__":
    main()
