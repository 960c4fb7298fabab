"""Tasks as plug-ins: a TaskModule subclass named by `_target_` in conf/task/ (or one's own config on Hydra's searchpath)."""
from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from c3exp.config import instantiate_checked
from c3exp.results import PrimaryMetric
from c3exp.tasks.base import TaskModule
from c3exp.tasks.classification import ClassificationModule
from c3exp.tasks.detection import DetectionModule
from c3exp.tasks.segmentation import SegmentationModule

__all__ = ["ClassificationModule", "DetectionModule", "PrimaryMetric", "SegmentationModule", "TaskModule", "build_network",
           "build_task"]


def build_network(cfg: DictConfig) -> nn.Module:
    """The network the run's task trains: `task.net` around the model group's network (null: that network itself)."""
    from c3exp.models import build_model

    backbone, node = build_model(cfg), cfg.task.get("net")
    if node is None:
        return backbone
    # not recursive: a head node of one's own (`task.net.head._target_`) is the builder's to build
    return instantiate_checked(node, "task.net", backbone=backbone, num_classes=cfg.data.num_classes,
                               _convert_="all", _recursive_=False)


def build_task(cfg: DictConfig, net: nn.Module | None = None, run_config: dict[str, Any] | None = None) -> TaskModule:
    """cfg.task around `net`; `run_config` is what checkpoints carry (default: the resolved config, which needs a run's)."""
    scheduler = cfg.optim.get("scheduler")
    options: dict[str, Any] = {
        "net": build_network(cfg) if net is None else net,
        "num_classes": cfg.data.num_classes,
        "optimizer": instantiate(cfg.optim.optimizer),
        "scheduler": instantiate(scheduler) if scheduler else None,
        "scheduler_interval": cfg.optim.get("interval", "epoch"),
        "warmup_epochs": cfg.optim.get("warmup_epochs", 0),  # optim recipes of one's own may lack conf/optim/shared
        "run_config": OmegaConf.to_container(cfg, resolve=True) if run_config is None else run_config,
    }
    # not recursive: run_config holds every group's `_target_`, which are settings here, not objects to build
    return instantiate_checked(cfg.task, "task", TaskModule, **options, _convert_="all", _recursive_=False)
