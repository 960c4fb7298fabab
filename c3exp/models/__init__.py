"""Network builders and `build_model(cfg)`, the one entry point the training code uses."""
from __future__ import annotations

import copy as copy_module
import inspect
from typing import Any

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from c3exp.attention import sized_by_map
from c3exp.config import instantiate_reporting_user_errors
from c3exp.errors import ConfigError, check_keywords
from c3exp.models.base import ResNet
from c3exp.models.cifar_resnet import cifar_resnet, wide_resnet
from c3exp.models.detection import StagePyramid, faster_rcnn
from c3exp.models.heads import HEADS, create_head
from c3exp.models.placement import INPUT_SIZE_KEYS, PLACEMENTS, AttentionPlan, check_blocks_fit_maps
from c3exp.models.segmentation import SegmentationNet, segmentation_net
from c3exp.models.torchvision_net import torchvision_net
from c3exp.models.torchvision_resnet import torchvision_resnet
from c3exp.utils.complexity import data_input_shape

__all__ = [
    "HEADS",
    "PLACEMENTS",
    "AttentionPlan",
    "ResNet",
    "SegmentationNet",
    "StagePyramid",
    "build_model",
    "cifar_resnet",
    "create_head",
    "faster_rcnn",
    "segmentation_net",
    "torchvision_net",
    "torchvision_resnet",
    "wide_resnet",
    "without_pretrained",
]

# come from cfg.data and cfg.attn, not from the model group (input_size only to builders that take it)
SUPPLIED = ("num_classes", "attn", "input_size")
# How the network runs, not what it is: channels_last is applied here, compile by the training
# module (ClassificationModule.configure_model) and the benchmark, so that parameter names,
# checkpoints and complexity counts stay those of the plain network.
SPEED_KEYS = ("channels_last", "compile")


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate cfg.model with num_classes = cfg.data.num_classes, the attn group as a plain dict and,
    for builders that take it, input_size = the data's input side (C3 blocks sized by the maps it gives)."""
    model_cfg: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    model_cfg.pop("name", None)
    speed = speed_options(model_cfg)
    _check_model_keys(model_cfg)
    attn = OmegaConf.to_container(cfg.attn, resolve=True) if cfg.get("attn") is not None else None
    supplied = {"num_classes": cfg.data.num_classes, "attn": attn, **_input_size(model_cfg["_target_"], cfg.data)}
    if attn is not None and sized_by_map(attn.get("name", "none")):
        # Block sizes are checked against the maps on a meta-device copy first: an oversized block's
        # MLPs (A^2/r weights for A = H*W positions) are never allocated. Meta tensors draw no random
        # numbers, so the real network below is the one a seed always gave.
        with torch.device("meta"):
            probe = instantiate_reporting_user_errors(_without_weights(model_cfg), **supplied, _convert_="all")
        check_blocks_fit_maps(probe, cfg.data, (attn.get("options") or {}).get("spatial_sizes"))
    net = instantiate_reporting_user_errors(model_cfg, **supplied, _convert_="all")
    return net.to(memory_format=torch.channels_last) if speed["channels_last"] else net


def _input_size(target: str, data: Any) -> dict[str, int]:
    """{"input_size": the data's training input side} for builders that size attention by it, when the data sets one."""
    takes_it = "input_size" in inspect.signature(hydra.utils.get_method(target)).parameters
    known = any(data.get(key) for key in INPUT_SIZE_KEYS)
    return {"input_size": data_input_shape(data)[-1]} if takes_it and known else {}


def _without_weights(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """model_cfg without pretrained weights to load (model.weights null), for a network that only gets measured."""
    return {**model_cfg, "weights": None} if model_cfg.get("weights") is not None else model_cfg


def without_pretrained(cfg: DictConfig) -> DictConfig:
    """cfg, or a copy whose network starts from c3exp's own init where model.weights names pretrained ones.

    For networks whose weights a checkpoint is about to replace (resume, eval): no download, and an
    offline machine can still resume or evaluate a run that started from ImageNet weights.
    """
    if OmegaConf.select(cfg, "model.weights") is None:
        return cfg
    copy = copy_module.deepcopy(cfg)
    with open_dict(copy):
        copy.model.weights = None
    return copy


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
