"""bench.mode=loop: Lightning's Trainer.fit against a bare PyTorch loop, same network, batches and optimizer."""
from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from c3exp.bench.configs import BenchConfig
from c3exp.bench.steps import Batch, build_module, make_optimizer, seeded_batch, train_step
from c3exp.bench.timing import between_starts, synchronize
from c3exp.tasks import TaskModule
from c3exp.utils.noise import silence_library_noise

LOOPS = ("lightning", "bare")


class BatchList:
    """The same synthetic batches for both loops; a class, as Lightning reads a plain list as several loaders."""

    def __init__(self, batch: Batch, count: int):
        self.batch, self.count = batch, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Batch]:
        return itertools.repeat(self.batch, self.count)


def _step_clock(device: str) -> Any:
    """A Lightning callback recording the start of every training batch (imported lazily with Lightning)."""
    import lightning as L

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            synchronize(device)
            self.starts.append(time.perf_counter())

    return StepClock()


def lightning_block(config: BenchConfig, module: TaskModule, batches: BatchList) -> list[float]:
    """Trainer.fit on `batches` with logging, checkpointing, progress bar and validation off."""
    import lightning as L

    settings = config.settings
    clock = _step_clock(settings.device)
    silence_library_noise()
    with tempfile.TemporaryDirectory() as root:
        # Not train.build_trainer: the loop is timed bare, without the run's loggers, checkpoints and validation.
        trainer = L.Trainer(
            accelerator="gpu" if settings.device == "cuda" else "cpu",
            devices=1,
            precision=settings.precision,
            max_steps=len(batches),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[clock],
            default_root_dir=root,
        )
        trainer.fit(module, train_dataloaders=batches)
    return between_starts(clock.starts, settings.warmup)


def bare_block(config: BenchConfig, module: TaskModule, batches: BatchList) -> list[float]:
    """The same steps in a hand-written loop, with a fresh optimizer as every fit has."""
    settings = config.settings
    optimizer = make_optimizer(config, module)
    scaler = settings.grad_scaler()
    starts = []
    for batch in batches:
        synchronize(settings.device)
        starts.append(time.perf_counter())
        train_step(module, optimizer, batch, settings.autocast_dtype, scaler)
    return between_starts(starts, settings.warmup)


BLOCKS: dict[str, Callable[[BenchConfig, TaskModule, BatchList], list[float]]] = {
    "lightning": lightning_block, "bare": bare_block,
}


def compare_loops(config: BenchConfig) -> dict[str, list[float]]:
    """`rounds` blocks of each loop, who goes first alternating; a block times `steps` iterations after warm-up."""
    settings = config.settings
    modules = {"lightning": build_module(config, compile_here=False), "bare": build_module(config)}
    batches = BatchList(seeded_batch(config, modules["bare"]), settings.warmup + settings.steps + 1)
    times: dict[str, list[float]] = {name: [] for name in LOOPS}
    for round_index in range(settings.rounds):
        order = LOOPS if round_index % 2 == 0 else LOOPS[::-1]
        for name in order:
            times[name] += BLOCKS[name](config, modules[name], batches)
    return times
