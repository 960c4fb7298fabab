"""Checkpoints written beside themselves: Lightning's move from another filesystem's $TMPDIR truncates the old one."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from omegaconf import OmegaConf

from c3exp.utils.atomic import remove_temps, write_with


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save beside the checkpoint, fsynced and renamed; remote URLs keep Lightning's save (whole objects)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # Lightning's message for storage_options
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        remove_temps(Path(path).parent, "*.ckpt")
        write_with(path, lambda file: torch.save(checkpoint, file))


def with_atomic_checkpoint_io(plugins: Any) -> list[Any]:
    """trainer.plugins (none, one or a list; configs instantiated) plus AtomicCheckpointIO unless they have one."""
    plugins = instantiate(plugins) if OmegaConf.is_config(plugins) else plugins
    listed = isinstance(plugins, Iterable) and not isinstance(plugins, str)
    given = list(plugins) if listed else [] if plugins is None else [plugins]
    return given if any(isinstance(plugin, CheckpointIO) for plugin in given) else [*given, AtomicCheckpointIO()]
