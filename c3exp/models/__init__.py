"""Network builders and `build_model(cfg)`, the one entry point the training code uses."""
from __future__ import annotations

from typing import Any

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from c3exp.config import instantiate_reporting_user_errors
from c3exp.errors import ConfigError, check_keywords
from c3exp.models.base import ResNet
from c3exp.models.cifar_resnet import cifar_resnet, wide_resnet
from c3exp.models.placement import PLACEMENTS, AttentionPlan
from c3exp.models.torchvision_resnet import torchvision_resnet

__all__ = [
    "PLACEMENTS",
    "AttentionPlan",
    "ResNet",
    "build_model",
    "cifar_resnet",
    "torchvision_resnet",
    "wide_resnet",
]

SUPPLIED = ("num_classes", "attn")  # come from cfg.data and cfg.attn, not from the model group
# How the network runs, not what it is: channels_last is applied here, compile by the training
# module (ClassificationModule.configure_model) and the benchmark, so that parameter names,
# checkpoints and complexity counts stay those of the plain network.
SPEED_KEYS = ("channels_last", "compile")


def build_model(cfg: DictConfig, **task_options: Any) -> nn.Module:
    """Instantiate cfg.model with num_classes = cfg.data.num_classes and the attn group as a plain dict.

    `task_options` are builder arguments a task sets (segmentation's output_stride), not the model group.
    """
    model_cfg: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    model_cfg.pop("name", None)
    speed = speed_options(model_cfg)
    _check_model_keys(model_cfg)
    attn = OmegaConf.to_container(cfg.attn, resolve=True) if cfg.get("attn") is not None else None
    net = instantiate_reporting_user_errors(
        model_cfg, num_classes=cfg.data.num_classes, attn=attn, **task_options, _convert_="all"
    )
    return net.to(memory_format=torch.channels_last) if speed["channels_last"] else net


def speed_options(model_cfg: dict[str, Any]) -> dict[str, bool]:
    """Remove and validate model.channels_last / model.compile (both false when absent, as in old checkpoints)."""
    options = {key: model_cfg.pop(key, False) for key in SPEED_KEYS}
    for key, value in options.items():
        if not isinstance(value, bool):
            raise ConfigError(f"model.{key}", value, "true or false")
    return options


def _check_model_keys(model_cfg: dict[str, Any]) -> None:
    """Unknown keys in the model group are user errors, named as config keys."""
    target = model_cfg.get("_target_")
    if target is None:
        raise ConfigError("model._target_", None, "a builder such as c3exp.models.cifar_resnet")
    settings = {key: value for key, value in model_cfg.items() if key != "_target_"}
    check_keywords(settings, hydra.utils.get_method(target), "model.", f"a setting of {target}", supplied=SUPPLIED)
