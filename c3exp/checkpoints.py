"""Checkpoints read with `weights_only=True`, so one from someone else cannot run what its pickle holds."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from c3exp.errors import ConfigError, check

#: Set to 1 to open checkpoints that hold other Python objects (older files from a source you trust).
TRUST_ENV = "C3EXP_TRUST_CHECKPOINTS"


def trusted() -> bool:
    return os.environ.get(TRUST_ENV) == "1"


def open_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents with its tensors memory-mapped, not read; refused in one line if unsafe."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted(), mmap=True)
    except pickle.UnpicklingError as err:
        if trusted() or "weights only load failed" not in str(err).lower():
            raise
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        raise ConfigError(
            key, str(path), f"a checkpoint of tensors and plain data, which loading cannot turn into code: this one "
            f"holds {found.group(1) if found else 'other Python objects'}; {TRUST_ENV}=1 opens a file you trust"
        ) from None


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint that c3exp wrote, or one line naming `key`=path and what is wrong with the file."""
    path = Path(path)
    check(path.is_file(), key, str(path), "an existing checkpoint file")
    try:
        checkpoint = open_checkpoint(path, key)
    except ConfigError:
        raise
    except Exception as err:  # pickle, zip or end-of-file errors: whatever the file is, it is no checkpoint
        raise ConfigError(
            key, str(path), f"a c3exp/Lightning checkpoint (torch.load cannot read this file: {type(err).__name__})"
        ) from None
    check(isinstance(checkpoint, dict) and "c3exp" in checkpoint, key, str(path), "a checkpoint written by c3exp")
    # what eval, analyze and resuming read: its weights and its run's config
    section = checkpoint["c3exp"] if isinstance(checkpoint["c3exp"], dict) else {}
    parts = {"weights (state_dict)": isinstance(checkpoint.get("state_dict"), dict),
             "run config (c3exp.config)": bool(section.get("config"))}
    missing = [part for part, present in parts.items() if not present]
    check(not missing, key, str(path), f"a complete c3exp checkpoint: this one has no {' and no '.join(missing)}")
    return checkpoint
