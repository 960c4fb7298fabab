"""Data modules built as a run builds them: from data=<choice>'s YAML, the only place of their settings' defaults."""
from __future__ import annotations

import copy
from functools import cache
from typing import Any

import lightning as L
from omegaconf import DictConfig, open_dict

import c3exp
from c3exp.config import instantiate_checked


@cache
def _composed(choice: str) -> DictConfig:
    return c3exp.compose([f"data={choice}"])


def data_config(choice: str, **settings: Any) -> DictConfig:
    """data=<choice>'s node with `settings` merged in, as `data.<key>=` overrides would (interpolations follow)."""
    cfg = copy.deepcopy(_composed(choice))
    with open_dict(cfg):
        cfg.data.merge_with(settings)
    return cfg.data


def data_module(choice: str, **settings: Any) -> L.LightningDataModule:
    """data=<choice>'s module with `settings` over its YAML values, checked as a run checks them."""
    return instantiate_checked(data_config(choice, **settings), "data")
