"""torchvision's ImageNet weights (or a file of them), loaded strictly into the torchvision network before attention."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from c3exp.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
WEIGHTS_HINT = "null, imagenet (torchvision's weights, downloaded) or the path of a torchvision state dict (.pth)"


def load_torchvision_weights(net: nn.Module, weights: str | os.PathLike, arch: str) -> None:
    """Load `weights` into torchvision's own `net`, its classifier kept for other class counts."""
    state_dict = read_weights(weights, arch)
    own = net.state_dict()
    classifier = next(name for name, module in reversed(list(net.named_modules())) if isinstance(module, nn.Linear))
    note = _classifier_note(state_dict, own, classifier)
    if note:  # the net's own classifier tensors stand in for the file's
        state_dict = {key: t for key, t in state_dict.items() if _module(key) != classifier}
        state_dict.update({key: t for key, t in own.items() if _module(key) == classifier})
    _check_fit(state_dict, own, weights, arch)
    net.load_state_dict(state_dict)
    source = f"{IMAGENET} weights" if weights == IMAGENET else f"weights {weights}"
    log.info(f"pretrained {source}: {note or 'every tensor loaded'}")


def read_weights(weights: str | os.PathLike, arch: str) -> dict[str, torch.Tensor]:
    if weights == IMAGENET:
        return download_imagenet_weights(arch)
    if not isinstance(weights, (str, os.PathLike)) or not str(weights):
        raise ConfigError("model.weights", weights, WEIGHTS_HINT)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError("model.weights", weights, f"{IMAGENET} or an existing file (no file at {path.resolve()})")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises whatever the bytes trigger: UnpicklingError, KeyError, ...
        raise ConfigError("model.weights", weights, f"a torchvision state dict ({_one_line(error)})") from None
    state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else loaded
    if not isinstance(state_dict, Mapping) or not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
        raise ConfigError("model.weights", weights, "a torchvision state dict (a dict of tensors, or one under 'state_dict')")
    return dict(state_dict)


def download_imagenet_weights(arch: str) -> dict[str, torch.Tensor]:
    entry = models.get_model_weights(arch).DEFAULT
    try:
        return entry.get_state_dict(progress=False)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a corrupt download a RuntimeError
        raise DataNotFoundError(
            f"model.weights={IMAGENET}: downloading {entry.url} failed ({_one_line(error)}); "
            f"pass model.weights=/path/to/{arch}.pth (a torchvision state dict)"
        ) from None


def _check_fit(
    state_dict: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], weights: str | os.PathLike, arch: str
) -> None:
    """One line unless the tensors match (BN's num_batches_tracked may be absent, as in older files)."""

    unknown = [key for key in state_dict if key not in own]
    misfits = [key for key in state_dict if key in own and state_dict[key].shape != own[key].shape]
    missing = [key for key in own if key not in state_dict and not key.endswith("num_batches_tracked")]
    problems = [
        _problem("match no module", unknown),
        _problem("have other shapes", misfits, lambda key: f" {_shape(state_dict[key])} vs {_shape(own[key])}"),
        _problem("are missing", missing),
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise ConfigError(
            "model.weights", weights, f"a torchvision {arch} state dict, but its tensors do not fit: {'; '.join(problems)}"
        )


def _classifier_note(state_dict: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], classifier: str) -> str:
    """Why the classifier is not loaded (absent, or another class count), or '' when it is."""
    weight = f"{classifier}.weight"
    if weight not in state_dict:
        return f"{classifier} not in the weights"
    theirs, ours = state_dict[weight].shape, own[weight].shape
    return "" if theirs == ours else f"{classifier} skipped ({theirs[0]} vs {ours[0]} classes)"


def _problem(what: str, keys: list[str], detail: Callable[[str], str] = lambda key: "") -> str:
    return f"{len(keys)} {what} (e.g. {keys[0]}{detail(keys[0])})" if keys else ""


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
