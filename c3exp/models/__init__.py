"""Network builders and `build_model(cfg)`; a backbone of one's own is a model config's `_target_` taking
`num_classes`, `attn` (a plain dict or None) and optionally `input_size`, and returning a `ResNet`."""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from c3exp.attention import block_of, sized_by_map
from c3exp.errors import check, imported, is_int
from c3exp.models.base import NUM_CLASSES_HINT, ResNet, classifier_head
from c3exp.models.cifar_resnet import cifar_resnet, wide_resnet
from c3exp.models.detection import StagePyramid, faster_rcnn
from c3exp.models.heads import HEADS, create_head
from c3exp.models.placement import INPUT_SIZE_KEYS, PLACEMENTS, AttentionPlan, check_blocks_fit_maps, placement_plan
from c3exp.models.segmentation import SegmentationNet, segmentation_net
from c3exp.models.torchvision_net import torchvision_net
from c3exp.models.torchvision_resnet import torchvision_resnet
from c3exp.schema import check_complete, check_settings, parameters
from c3exp.utils.complexity import data_input_shape

__all__ = [
    "HEADS", "PLACEMENTS", "AttentionPlan", "ResNet", "SegmentationNet", "StagePyramid", "build_model", "cifar_resnet",
    "classifier_head", "create_head", "faster_rcnn", "placement_plan", "segmentation_net", "torchvision_net",
    "torchvision_resnet", "wide_resnet", "without_pretrained",
]

# come from cfg.data and cfg.attn, not from the model group (input_size only to builders that take it)
SUPPLIED = ("num_classes", "attn", "input_size")
BUILDER_HINT = "a builder taking num_classes and attn that returns a c3exp.models.ResNet, such as c3exp.models.cifar_resnet"


def build_model(cfg: DictConfig) -> nn.Module:
    """cfg.model's builder with cfg.data.num_classes, the attn group as a plain dict and, if taken, input_size."""
    model_cfg: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    model_cfg.pop("name", None)
    builder = _checked_builder(model_cfg)
    attn = OmegaConf.to_container(cfg.attn, resolve=True) if cfg.get("attn") is not None else None
    classes = cfg.data.num_classes
    check(is_int(classes) and classes >= 1, "data.num_classes", classes, NUM_CLASSES_HINT)  # imagefolder: null until counted
    supplied = {"num_classes": classes, "attn": attn}
    if "input_size" in parameters(builder) and any(cfg.data.get(key) for key in INPUT_SIZE_KEYS):
        supplied["input_size"] = data_input_shape(cfg.data)[-1]  # the data's training input side
    if attn is not None and sized_by_map(block_of(attn)):
        # On the meta device an oversized block's A^2/r weights are never allocated, and no random numbers are drawn;
        # measured only: no pretrained weights.
        probe_cfg = {**model_cfg, "weights": None} if model_cfg.get("weights") is not None else model_cfg
        with torch.device("meta"):
            probe = instantiate(probe_cfg, _partial_=True, _convert_="all")(**supplied)
        check_blocks_fit_maps(probe, cfg.data, (attn.get("options") or {}).get("spatial_sizes"))
    # partial: the attn dict goes to the builder as data (its `_target_` is the block's, built per insertion point)
    net = instantiate(model_cfg, _partial_=True, _convert_="all")(**supplied)
    check(isinstance(net, ResNet), "model._target_", model_cfg["_target_"], BUILDER_HINT)
    return net


def without_pretrained(cfg: DictConfig) -> DictConfig:
    """cfg with model.weights null, for a checkpoint to replace the weights: an offline machine can resume or eval."""
    if OmegaConf.select(cfg, "model.weights") is None:
        return cfg
    return OmegaConf.merge(cfg, {"model": {"weights": None}})  # a copy: cfg keeps its weights


def _checked_builder(model_cfg: dict[str, Any]) -> Any:
    """The model group's builder, checked to take num_classes, attn and the group's other keys."""
    target = model_cfg.get("_target_")
    check(target is not None, "model._target_", target, BUILDER_HINT)
    builder = imported(target, "model._target_")
    takes = callable(builder) and {"num_classes", "attn"} <= parameters(builder).keys()
    check(takes, "model._target_", target, BUILDER_HINT)
    settings = {key: value for key, value in model_cfg.items() if key != "_target_"}
    check_settings(settings, builder, "model.", supplied=SUPPLIED)
    check_complete(settings, builder, "model.", supplied=SUPPLIED)
    return builder
