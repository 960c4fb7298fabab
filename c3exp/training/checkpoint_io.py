"""Checkpoints written beside themselves: Lightning stages them in $TMPDIR, and where that is another filesystem
the "move" truncates the old last.ckpt first, so a kill or a full disk leaves a short file under its name."""
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
    """torch.save into a temporary file in the checkpoint's folder, fsynced and renamed onto its name; remote URLs keep
    Lightning's save (object stores replace whole objects anyway)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # Lightning's message for storage_options
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_temps(path.parent, "*.ckpt")
        write_with(path, lambda file: torch.save(checkpoint, file))


def with_atomic_checkpoint_io(plugins: Any) -> list[Any]:
    """trainer.plugins (none, one or a list; configs instantiated) and AtomicCheckpointIO, unless they have a CheckpointIO."""
    if OmegaConf.is_config(plugins):
        plugins = instantiate(plugins)
    if plugins is None:
        plugins = []
    given = list(plugins) if isinstance(plugins, Iterable) and not isinstance(plugins, str) else [plugins]
    if any(isinstance(plugin, CheckpointIO) for plugin in given):
        return given
    return [*given, AtomicCheckpointIO()]
