"""One full training step on a synthetic batch: what the bench times, built as training builds it."""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from lightning.fabric.utilities import move_data_to_device
from omegaconf import OmegaConf

from c3exp.bench.configs import BenchConfig
from c3exp.tasks import TaskModule, build_task
from c3exp.utils.complexity import data_input_shape

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


def make_optimizer(config: BenchConfig, module: TaskModule) -> torch.optim.Optimizer:
    return instantiate(config.cfg.optim.optimizer)(params=module.net.parameters())


def trainee_step(config: BenchConfig) -> Callable[[], torch.Tensor]:
    """One configuration's timed step, with everything it needs built before any timing starts."""
    module = build_module(config)
    settings = config.settings
    return functools.partial(train_step, module, make_optimizer(config, module), seeded_batch(config, module),
                             settings.autocast_dtype, settings.grad_scaler())
