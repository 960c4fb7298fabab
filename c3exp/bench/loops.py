"""bench.mode=loop: Lightning's Trainer.fit against a bare PyTorch loop, same network, batches and optimizer."""
from __future__ import annotations

import itertools
import tempfile
import time
from typing import Any

import lightning as L

from c3exp.bench.configs import BenchConfig
from c3exp.bench.steps import Batch, build_module, make_optimizer, seeded_batch, train_step
from c3exp.bench.timing import synchronize
from c3exp.tasks import TaskModule
from c3exp.utils.noise import silence_library_noise


class StepClock(L.Callback):
    """The start of every training batch, the device's queued work done."""

    def __init__(self, device: str) -> None:
        self.device, self.starts = device, []

    def on_train_batch_start(self, *args: Any) -> None:
        synchronize(self.device)
        self.starts.append(time.perf_counter())


def lightning_block(config: BenchConfig, module: TaskModule, batch: Batch) -> list[float]:
    """Trainer.fit with logging, checkpointing, progress bar and validation off: not the run's train.build_trainer."""
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
    return between_starts(clock.starts, settings.warmup)


def bare_block(config: BenchConfig, module: TaskModule, batch: Batch) -> list[float]:
    """The same steps in a hand-written loop, with a fresh optimizer as every fit has."""
    settings = config.settings
    optimizer, scaler, clock = make_optimizer(config, module), settings.grad_scaler(), StepClock(settings.device)
    for _ in range(settings.warmup + settings.steps + 1):
        clock.on_train_batch_start()
        train_step(module, optimizer, batch, settings.autocast_dtype, scaler)
    return between_starts(clock.starts, settings.warmup)


def between_starts(starts: list[float], skip: int) -> list[float]:
    """Durations of whole loop iterations: from one batch's start to the next one's, after `skip` iterations."""
    return [b - a for a, b in itertools.pairwise(starts)][skip:]


def compare_loops(config: BenchConfig) -> dict[str, list[float]]:
    """`rounds` blocks of each loop, who goes first alternating; a block times `steps` iterations after warm-up."""
    modules = {"lightning": build_module(config, compile_here=False), "bare": build_module(config)}
    batch = seeded_batch(config, modules["bare"])
    blocks = {"lightning": lightning_block, "bare": bare_block}
    times: dict[str, list[float]] = {name: [] for name in blocks}
    for round_index in range(config.settings.rounds):
        for name in list(blocks)[:: -1 if round_index % 2 else 1]:
            times[name] += blocks[name](config, modules[name], batch)
    return times
