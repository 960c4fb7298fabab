"""What the bench times: full training steps as training builds them, on a synthetic batch; loop mode's two loops."""
from __future__ import annotations

import functools
import itertools
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities import move_data_to_device
from omegaconf import OmegaConf

from c3exp.bench.configs import BenchConfig, BenchSettings
from c3exp.errors import check
from c3exp.tasks import TaskModule, build_task
from c3exp.utils.complexity import data_input_shape
from c3exp.utils.noise import silence_library_noise

Batch = tuple[torch.Tensor, torch.Tensor]
#: fp32 and bf16 need no loss scaling: a disabled scaler's scale, step and update are the plain ones.
NO_SCALING = torch.amp.GradScaler("cpu", enabled=False)


def train_step(module: TaskModule, optimizer: torch.optim.Optimizer, batch: Batch, autocast_dtype: torch.dtype | None,
               scaler: torch.amp.GradScaler = NO_SCALING) -> torch.Tensor:
    """One full step as Lightning's automatic optimisation does it: zero grads, the task's loss, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(batch[0].device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = module.model_step(batch)[0]
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def graphed_step(module: TaskModule, batch: Batch, autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """The same step as task.cuda_graphs trains it (module.start_graphs first): captured after its warm-up on CUDA."""
    with torch.autocast(batch[0].device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        module.learning_rates.refresh()
        return module.graphs(*batch)


def timed_step(module: TaskModule, optimizer: torch.optim.Optimizer, batch: Batch,
               settings: BenchSettings) -> Callable[[], torch.Tensor]:
    """One training step of `module` on `batch`: graphed where bench.cuda_graphs, else train_step."""
    if settings.cuda_graphs:
        check(module.has_graphed_step(), "bench.cuda_graphs", True, f"false: {type(module).__name__} has no graphed step")
        module.start_graphs(optimizer)
        return functools.partial(graphed_step, module, batch, settings.autocast_dtype)
    return functools.partial(train_step, module, optimizer, batch, settings.autocast_dtype, settings.grad_scaler())


def seeded_batch(config: BenchConfig, module: TaskModule) -> Batch:
    """Standardised random images of the data config's shape and the task's targets from bench.seed, on the device."""
    settings = config.settings
    generator = torch.Generator().manual_seed(settings.seed)
    images = torch.randn((settings.batch_size, *data_input_shape(config.cfg.data)[1:]), generator=generator)
    targets = move_data_to_device(module.random_targets(images, generator), settings.device)  # a tensor or dicts
    layout = torch.channels_last if settings.channels_last else torch.preserve_format
    return images.to(settings.device, memory_format=layout), targets


def build_module(config: BenchConfig, compile_here: bool = True) -> TaskModule:
    """The task module training would build, seeded, on the device; compile_here=False leaves it to configure_model."""
    torch.manual_seed(config.settings.seed)
    run_config = {"model": OmegaConf.to_container(config.cfg.model, resolve=True)}
    module = build_task(config.cfg, run_config=run_config).to(config.settings.device).train()
    if config.settings.compile and compile_here:
        module.net.compile()
    return module


def trainee_step(config: BenchConfig) -> Callable[[], torch.Tensor]:
    """One configuration's timed step, with everything it needs built before any timing starts."""
    module = build_module(config)
    optimizer = module.optimizer_factory(params=module.parameters())  # as configure_optimizers builds it
    return timed_step(module, optimizer, seeded_batch(config, module), config.settings)


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


class StepClock(L.Callback):
    """The start of every training batch, the device's queued work done."""

    def __init__(self, device: str) -> None:
        self.device, self.starts = device, []

    def on_train_batch_start(self, *args: Any) -> None:
        synchronize(self.device)
        self.starts.append(time.perf_counter())


def lightning_block(config: BenchConfig, module: TaskModule, batch: Batch) -> list[float]:
    """The starts of Trainer.fit's batches; logging, checkpointing, progress bar, validation off (not build_trainer)."""
    settings = config.settings
    clock = StepClock(settings.device)
    silence_library_noise()
    count = settings.warmup + settings.steps + 1
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(accelerator="gpu" if settings.device == "cuda" else "cpu", devices=1,
                            precision=settings.precision, max_steps=count, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, callbacks=[clock], default_root_dir=root)
        trainer.fit(module, train_dataloaders=itertools.repeat(batch, count))
    return clock.starts


def bare_block(config: BenchConfig, module: TaskModule, batch: Batch) -> list[float]:
    """The same steps in a hand-written loop, with a fresh optimizer as every fit has: the starts of its batches."""
    settings = config.settings
    step = timed_step(module, module.optimizer_factory(params=module.parameters()), batch, settings)
    clock = StepClock(settings.device)
    for _ in range(settings.warmup + settings.steps + 1):
        clock.on_train_batch_start()
        step()
    return clock.starts


def compare_loops(config: BenchConfig) -> dict[str, list[float]]:
    """`rounds` blocks of each loop, who goes first alternating; each times `steps` iterations, batch start to start."""
    modules = {"lightning": build_module(config, compile_here=False), "bare": build_module(config)}
    batch = seeded_batch(config, modules["bare"])
    blocks = {"lightning": lightning_block, "bare": bare_block}
    times: dict[str, list[float]] = {name: [] for name in blocks}
    for round_index in range(config.settings.rounds):
        for name in list(blocks)[:: -1 if round_index % 2 else 1]:
            starts = blocks[name](config, modules[name], batch)
            times[name] += [b - a for a, b in itertools.pairwise(starts)][config.settings.warmup:]
    return times
