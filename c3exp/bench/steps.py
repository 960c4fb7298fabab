"""One full training step on a synthetic batch: what the bench times, built as training builds it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from lightning.fabric.utilities import move_data_to_device
from omegaconf import DictConfig, OmegaConf

from c3exp.bench.configs import BenchConfig
from c3exp.bench.settings import BenchSettings
from c3exp.tasks import TaskModule, build_task
from c3exp.utils.complexity import data_input_shape

Batch = tuple[torch.Tensor, torch.Tensor]


def train_step(
    module: TaskModule,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    autocast_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One full step as Lightning's automatic optimisation does it: zero grads, the task's loss, backward, step."""
    images = batch[0]
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = module.model_step(batch)[0]
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss


def synthetic_batch(cfg: DictConfig, module: TaskModule, settings: BenchSettings, generator: torch.Generator) -> Batch:
    """Standardised random images of the data config's shape and the task's kind of targets, on the device."""
    shape = (settings.batch_size, *data_input_shape(cfg.data)[1:])
    images = torch.randn(shape, generator=generator)
    targets = move_data_to_device(module.random_targets(images, generator), settings.device)  # a tensor or a list of dicts
    images = images.to(settings.device)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def seeded_batch(config: BenchConfig, module: TaskModule) -> Batch:
    """The configuration's synthetic batch from bench.seed: every configuration sees the same images."""
    return synthetic_batch(config.cfg, module, config.settings, torch.Generator().manual_seed(config.settings.seed))


def build_module(config: BenchConfig, compile_here: bool = True) -> TaskModule:
    """The task module training would build, seeded, on the device; compile_here=False leaves it to configure_model."""
    torch.manual_seed(config.settings.seed)
    run_config = {"model": OmegaConf.to_container(config.cfg.model, resolve=True)}
    module = build_task(config.cfg, run_config=run_config).to(config.settings.device).train()
    if config.settings.compile and compile_here:
        module.net.compile()
    return module


def make_optimizer(config: BenchConfig, module: TaskModule) -> torch.optim.Optimizer:
    """The optimizer the optim config names, on the module's network."""
    return instantiate(config.cfg.optim.optimizer)(params=module.net.parameters())


@dataclass
class Trainee:
    """A task's module, its optimizer and one synthetic batch on the device: what one timed step needs."""

    module: TaskModule
    optimizer: torch.optim.Optimizer
    batch: Batch
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def step(self) -> torch.Tensor:
        """One training step on the trainee's batch."""
        return train_step(self.module, self.optimizer, self.batch, self.autocast_dtype, self.scaler)


def make_trainee(config: BenchConfig) -> Trainee:
    """Everything one configuration's timed steps need, built before any timing starts."""
    module = build_module(config)
    settings = config.settings
    return Trainee(module, make_optimizer(config, module), seeded_batch(config, module), settings.autocast_dtype,
                   settings.grad_scaler())
