"""torchvision's ImageNet weights (or a file of them) in c3exp's rearranged torchvision networks.

c3exp moves torchvision's modules around (stem / stages / head, a block's last BN wrapped as
Sequential(bn, attention), attention first in a stage), so the tensor names differ while the module
objects stay the same. The builder records every torchvision module's name before rearranging, and
each tensor of the weights goes to wherever its module ended up; attention modules, which the
weights do not have, keep c3exp's initialisation.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from c3exp.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
WEIGHTS_HINT = "null, imagenet (torchvision's weights, downloaded) or the path of a torchvision state dict (.pth)"
SHOWN = 4  # module names a log line lists before eliding


def module_names(net: nn.Module) -> dict[nn.Module, str]:
    """Every module of `net` -> its name there; record it before the modules are rearranged."""
    return {module: name for name, module in net.named_modules()}


def load_torchvision_weights(
    model: nn.Module, weights: str | os.PathLike, arch: str, source_names: Mapping[nn.Module, str]
) -> None:
    """Load `weights` (see WEIGHTS_HINT) into `model`; `source_names` gives torchvision's name of its modules.

    Non-strict in two ways only: modules torchvision lacks (attention) stay as initialised, and the
    classifier (the last linear layer: fc, classifier.1, ...) is skipped when its class count differs.
    Anything else that does not fit is an error.
    """
    state_dict = read_weights(weights, arch)
    targets = tensor_targets(model, source_names)
    own = model.state_dict()
    classifier = classifier_name(source_names)
    _check_fit(state_dict, targets, own, weights, arch, classifier)
    note = _classifier_note(state_dict, targets, own, classifier)
    skipped = classifier if note else None
    model.load_state_dict({targets[key]: t for key, t in state_dict.items() if _module(key) != skipped}, strict=False)
    log.info(_summary(weights, targets, own, note))


def classifier_name(source_names: Mapping[nn.Module, str]) -> str:
    """torchvision's name of the network's last linear layer, the one whose size is the class count."""
    return next(name for module, name in reversed(source_names.items()) if isinstance(module, nn.Linear))


def read_weights(weights: str | os.PathLike, arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict for `arch`, or the one stored in the file `weights`."""
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
    """torchvision's default ImageNet weights for `arch`, through torch hub's cache."""
    entry = models.get_model_weights(arch).DEFAULT
    try:
        return entry.get_state_dict(progress=False)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a corrupt download a RuntimeError
        raise DataNotFoundError(
            f"model.weights={IMAGENET}: downloading {entry.url} failed ({_one_line(error)}); "
            f"pass model.weights=/path/to/{arch}.pth (a torchvision state dict)"
        ) from None


def tensor_targets(model: nn.Module, source_names: Mapping[nn.Module, str]) -> dict[str, str]:
    """torchvision's tensor name -> ours, for every parameter and buffer of the modules both share."""
    targets = {}
    for name, module in model.named_modules():
        source = source_names.get(module)
        if source is None:
            continue
        for local, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            targets[_join(source, local)] = _join(name, local)
    return targets


def _check_fit(
    state_dict: Mapping[str, torch.Tensor],
    targets: Mapping[str, str],
    own: Mapping[str, torch.Tensor],
    weights: str | os.PathLike,
    arch: str,
    classifier: str,
) -> None:
    """One line unless every tensor of the weights, and every backbone tensor, has its counterpart.

    The classifier is left to `_classifier_note`; BN's num_batches_tracked is absent from torchvision's
    older files (load_state_dict handles that).
    """
    backbone = [key for key in targets if _module(key) != classifier]
    unknown = [key for key in state_dict if key not in targets]
    misfits = [key for key in backbone if key in state_dict and state_dict[key].shape != own[targets[key]].shape]
    missing = [key for key in backbone if key not in state_dict and not key.endswith("num_batches_tracked")]
    problems = [
        _problem("match no module", unknown),
        _problem("have other shapes", misfits, state_dict, own, targets),
        _problem("are missing", missing),
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise ConfigError(
            "model.weights", weights, f"a torchvision {arch} state dict, but its tensors do not fit: {'; '.join(problems)}"
        )


def _classifier_note(
    state_dict: Mapping[str, torch.Tensor], targets: Mapping[str, str], own: Mapping[str, torch.Tensor], classifier: str
) -> str | None:
    """Why the classifier is not loaded (absent, or another class count), or None when it is."""
    weight = f"{classifier}.weight"
    if weight not in state_dict:
        return f"{classifier} not in the weights"
    theirs, ours = state_dict[weight].shape, own[targets[weight]].shape
    return None if theirs == ours else f"{classifier} skipped ({theirs[0]} vs {ours[0]} classes)"


def _problem(
    what: str,
    keys: list[str],
    state_dict: Mapping[str, torch.Tensor] | None = None,
    own: Mapping[str, torch.Tensor] | None = None,
    targets: Mapping[str, str] | None = None,
) -> str:
    if not keys:
        return ""
    example = keys[0]
    if state_dict is not None and own is not None and targets is not None:
        example += f" {_shape(state_dict[example])} vs {_shape(own[targets[example]])}"
    return f"{len(keys)} {what} (e.g. {example})"


def _summary(
    weights: str | os.PathLike, targets: Mapping[str, str], own: Mapping[str, torch.Tensor], classifier: str | None
) -> str:
    """One line: what the weights did not provide, grouped by outermost new module."""
    loaded = set(targets.values())
    new = _new_modules([key for key in own if key not in loaded], loaded)
    parts = [f"{len(new)} module{'s' if len(new) > 1 else ''} new ({_elide(new)})" if new else "no module new"]
    parts += [classifier] if classifier else []
    source = f"{IMAGENET} weights" if weights == IMAGENET else f"weights {weights}"
    return f"pretrained {source}: {', '.join(parts)}"


def _new_modules(new_keys: Iterable[str], loaded_keys: Iterable[str]) -> list[str]:
    """The outermost modules holding new tensors only: one name per attention module, not per layer."""
    loaded = {prefix for key in loaded_keys for prefix in _ancestors(key)}
    outermost = (next((name for name in _ancestors(key) if name not in loaded), _module(key)) for key in new_keys)
    return list(dict.fromkeys(outermost))


def _ancestors(key: str) -> list[str]:
    """'a.b.weight' -> ['a', 'a.b'] (outermost first), or [''] for a tensor of the root module."""
    parts = key.split(".")[:-1]
    return [".".join(parts[: end + 1]) for end in range(len(parts))] or [""]


def _elide(names: list[str]) -> str:
    return ", ".join(names if len(names) <= SHOWN else [*names[: SHOWN - 1], "...", names[-1]])


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
