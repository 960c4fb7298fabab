"""Training steps replayed as CUDA graphs: one call queues a whole step (forward, backward, optimiser step) on the GPU,
so a small network's step costs its kernels' time, not the host's time launching them one by one."""
from __future__ import annotations

import collections
import contextlib
import inspect
from collections.abc import Callable, Iterator

import torch

#: (shape, stride, dtype) of every input: a batch of another size or layout gets its own graph.
Signature = tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]


def signature(inputs: tuple[torch.Tensor, ...]) -> Signature:
    return tuple((tuple(x.shape), x.stride(), x.dtype) for x in inputs)


def on_side_stream(step: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """`step(*inputs)` on a fresh stream, ordered after and before the current one: how a step to capture warms up."""
    stream, current = torch.cuda.Stream(), torch.cuda.current_stream()
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        output = step(*inputs)
    current.wait_stream(stream)
    return output


class StepGraphs:
    """Calls `step(*inputs)` (tensors in, a tensor out). On CUDA, after `warmup` eager calls with one input signature,
    it captures the step once for that signature and then replays it: each call copies its inputs into the graph's own
    buffers, and returns the graph's output tensor, overwritten by the next replay. Off CUDA, every call is plain.

    A captured step reads only tensors: whatever the host changes between steps (the learning rate) must live in a
    tensor the graph reads (see DeviceLearningRates), and `around_capture` puts such tensors in place for the capture.
    The step's in-place updates (weights, optimiser state, BatchNorm statistics, metric sums) replay on the same
    tensors, so the module and its optimiser stay the ones checkpoints save and load."""

    def __init__(self, step: Callable[..., torch.Tensor], warmup: int = 3,
                 around_capture: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.step, self.warmup, self.around_capture = step, warmup, around_capture
        self.graphs: dict[Signature, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self.eager_calls: collections.Counter[Signature] = collections.Counter()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not inputs[0].is_cuda:
            return self.step(*inputs)
        key = signature(inputs)
        if key in self.graphs:
            graph, buffers, output = self.graphs[key]
            for buffer, value in zip(buffers, inputs):
                buffer.copy_(value, non_blocking=True)
            graph.replay()
            return output
        self.eager_calls[key] += 1
        if self.eager_calls[key] <= self.warmup:
            return on_side_stream(self.step, inputs)
        return self.capture(key, inputs)

    def capture(self, key: Signature, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Record the step on copies of `inputs` (nothing runs while recording), then replay it once for this batch."""
        buffers = tuple(x.clone() for x in inputs)  # clone keeps the strides: a channels_last batch stays one
        graph = torch.cuda.CUDAGraph()
        with self.around_capture(), torch.cuda.graph(graph):
            output = self.step(*buffers)
        self.graphs[key] = graph, buffers, output
        graph.replay()
        return output


class DeviceLearningRates:
    """The optimiser's learning rates as one-element device tensors, which a captured step reads: `refresh` copies each
    group's float into its tensor before a step (one small kernel, no host wait); the groups keep their floats for
    schedulers, logs and checkpoints, and hold the tensors only while `in_groups` is entered (the capture)."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.optimizer = optimizer
        self.rates = [torch.tensor(float(group["lr"]), device=device) for group in optimizer.param_groups]

    def refresh(self) -> None:
        for rate, group in zip(self.rates, self.optimizer.param_groups):
            rate.fill_(group["lr"])

    @contextlib.contextmanager
    def in_groups(self) -> Iterator[None]:
        floats = [group["lr"] for group in self.optimizer.param_groups]
        for rate, group in zip(self.rates, self.optimizer.param_groups):
            group["lr"] = rate
        try:
            yield
        finally:
            for value, group in zip(floats, self.optimizer.param_groups):
                group["lr"] = value


def uncached_autocast(device: str) -> torch.autocast:
    """The autocast in force (Lightning's, under bf16-mixed) without its cache of weight casts: a capture must not keep
    casts made before it, nor a replay read casts of weights that have changed since."""
    return torch.autocast(device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device),
                          cache_enabled=False)


def capturable_options(optimizer_class: type) -> dict[str, bool]:
    """The constructor options that make an optimiser's step capturable with a tensor learning rate on CUDA (fused,
    and Adam's `capturable`); empty when the class has neither, so it cannot be captured."""
    parameters = inspect.signature(optimizer_class).parameters
    return {key: True for key in ("fused", "capturable") if key in parameters} if "fused" in parameters else {}
