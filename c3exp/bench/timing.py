"""The clock: steps timed with the device's queued work, interleaved so load changes hit every configuration."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch


def synchronize(device: str) -> None:
    """Wait for the GPU's queued kernels, so a timer reads the work done, not the work launched."""
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], object], device: str) -> float:
    """Seconds of one call, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def interleave(steps: Sequence[Callable[[], object]], warmup: int, count: int, device: str) -> list[list[float]]:
    """`warmup` untimed then `count` timed calls of every step, round-robin; round r starts at step r mod n."""
    for step in [*steps] * warmup:
        step()
    times: list[list[float]] = [[] for _ in steps]
    for i in [(round_index + offset) % len(steps) for round_index in range(count) for offset in range(len(steps))]:
        times[i].append(timed(steps[i], device))
    return times
