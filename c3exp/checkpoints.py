"""Reading checkpoints: one loader for training's resume, eval and analyze."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from c3exp.errors import ConfigError, check


def open_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents with its tensors memory-mapped, not read."""
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint that c3exp wrote, or one line naming `key`=path and what is wrong with the file."""
    path = Path(path)
    check(path.is_file(), key, str(path), "an existing checkpoint file")
    try:
        checkpoint = open_checkpoint(path)
    except Exception as err:  # pickle, zip or end-of-file errors: whatever the file is, it is no checkpoint
        raise ConfigError(
            key, str(path), f"a c3exp/Lightning checkpoint (torch.load cannot read this file: {type(err).__name__})"
        ) from None
    check(isinstance(checkpoint, dict) and "c3exp" in checkpoint, key, str(path), "a checkpoint written by c3exp")
    return checkpoint
