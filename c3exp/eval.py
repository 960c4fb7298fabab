"""`python -m c3exp.eval ckpt_path=PATH [key=value ...]`: test a checkpoint on its run's data.

The checkpoint carries the resolved config of the run that wrote it; `key=value` arguments change
settings of it (e.g. `data.root=/datasets data.batch_size=512 trainer.accelerator=cpu`).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from c3exp.cli import run_reporting_user_errors
from c3exp.errors import ConfigError, check


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    check(path.is_file(), "ckpt_path", str(path), "an existing checkpoint file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    check("c3exp" in checkpoint, "ckpt_path", str(path), "a checkpoint written by c3exp")
    return checkpoint


def split_ckpt_arg(settings: Sequence[str]) -> tuple[str, list[str]]:
    """`ckpt_path=PATH` out of the key=value settings; the rest are config overrides."""
    paths = [item.partition("=")[2] for item in settings if item.startswith("ckpt_path=")]
    overrides = [item for item in settings if not item.startswith("ckpt_path=")]
    for item in overrides:
        check("=" in item, "argument", item, "ckpt_path=PATH or a key=value config override")
    check(len(paths) == 1, "ckpt_path", paths or None, "one checkpoint: ckpt_path=<run>/checkpoints/last.ckpt")
    return paths[0], overrides


def config_from_checkpoint(checkpoint: dict[str, Any], overrides: list[str]) -> DictConfig:
    cfg = OmegaConf.create(checkpoint["c3exp"]["config"])
    OmegaConf.set_struct(cfg, True)
    for item in overrides:
        check("=" in item, "argument", item, "a key=value config override")
        key, _, value = item.partition("=")
        try:
            OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"x={value}"]).x, merge=True)
        except (ConfigKeyError, ConfigAttributeError):  # an unknown key, top-level or nested
            raise ConfigError(key, value, "a key of the checkpoint's config (see its .hydra/config.yaml)") from None
    return cfg


def evaluate(ckpt_path: str | Path, overrides: list[str] = ()) -> dict[str, float]:
    """Rebuild the run's model and data from the checkpoint and test the stored weights."""
    from c3exp.train import build_datamodule, build_module
    from c3exp.models import build_model

    checkpoint = load_checkpoint(ckpt_path)
    cfg = config_from_checkpoint(checkpoint, list(overrides))
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, build_model(cfg))
    module.load_state_dict(checkpoint["state_dict"])
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        limit_test_batches=cfg.trainer.get("limit_test_batches"),  # the run's own test set, as it was tested
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    return {key: float(value) for key, value in metrics.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    ckpt_path, overrides = split_ckpt_arg(list(sys.argv[1:] if argv is None else argv))
    metrics = evaluate(ckpt_path, overrides)
    out = Path(ckpt_path).with_suffix(".eval.json")
    out.write_text(json.dumps({"ckpt_path": ckpt_path, **metrics}, indent=2) + "\n")
    print(" ".join(f"{key}={value:.4f}" for key, value in metrics.items()))
    return metrics


if __name__ == "__main__":
    run_reporting_user_errors(main)
