"""torchvision's ImageNet weights (or a file of them), loaded strictly into the torchvision network before attention."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from c3exp.errors import ConfigError, DataNotFoundError, check

log = logging.getLogger(__name__)

IMAGENET = "imagenet"


def load_torchvision_weights(net: nn.Module, weights: str | os.PathLike, arch: str) -> None:
    """Load `weights` into torchvision's own `net`, its classifier kept for other class counts."""
    state_dict = read_weights(weights, arch)
    own = net.state_dict()
    classifier = next(name for name, module in reversed(list(net.named_modules())) if isinstance(module, nn.Linear))
    weight = f"{classifier}.weight"
    note = f"{classifier} not in the weights" if weight not in state_dict else ""
    if not note and state_dict[weight].shape != own[weight].shape:
        note = f"{classifier} skipped ({state_dict[weight].shape[0]} vs {own[weight].shape[0]} classes)"
    if note:  # another class count, or none in the file: the net's own classifier stands in
        state_dict = {key: t for key, t in state_dict.items() if key.rpartition(".")[0] != classifier}
        state_dict.update({key: t for key, t in own.items() if key.rpartition(".")[0] == classifier})
    problems = {  # BN's num_batches_tracked may be absent, as in older files
        "match no module": [key for key in state_dict if key not in own],
        "have other shapes": [f"{key} {_shape(t)} vs {_shape(own[key])}" for key, t in state_dict.items()
                              if key in own and t.shape != own[key].shape],
        "are missing": [key for key in own if key not in state_dict and not key.endswith("num_batches_tracked")],
    }
    found = "; ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in problems.items() if keys)
    check(not found, "model.weights", weights, f"a torchvision {arch} state dict, but its tensors do not fit: {found}")
    net.load_state_dict(state_dict)
    source = f"{IMAGENET} weights" if weights == IMAGENET else f"weights {weights}"
    log.info(f"pretrained {source}: {note or 'every tensor loaded'}")


def read_weights(weights: str | os.PathLike, arch: str) -> dict[str, torch.Tensor]:
    if weights == IMAGENET:
        entry = models.get_model_weights(arch).DEFAULT
        try:
            return entry.get_state_dict(progress=False)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a corrupt download a RuntimeError
            raise DataNotFoundError(
                f"model.weights={IMAGENET}: downloading {entry.url} failed ({_one_line(error)}); "
                f"pass model.weights=/path/to/{arch}.pth (a torchvision state dict)"
            ) from None
    path = Path(weights).expanduser()
    check(path.is_file(), "model.weights", weights, f"{IMAGENET} or an existing file (no file at {path.resolve()})")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises whatever the bytes trigger: UnpicklingError, KeyError, ...
        raise ConfigError("model.weights", weights, f"a torchvision state dict ({_one_line(error)})") from None
    state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else loaded
    valid = isinstance(state_dict, Mapping) and all(isinstance(t, torch.Tensor) for t in state_dict.values())
    check(valid, "model.weights", weights, "a torchvision state dict (a dict of tensors, or one under 'state_dict')")
    return dict(state_dict)


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
