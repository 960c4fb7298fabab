"""Record the channel correlation of every stage during training, on a fixed batch of validation images.

Writes correlation.json and corr_epoch{E:03d}.npz/.png; epochs are 0-based, as in results.json's history.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from c3exp.analysis.correlation import StageCorrelation, stage_correlations
from c3exp.analysis.plots import CorrelationHistory, correlation_heatmaps
from c3exp.errors import ConfigError, check
from c3exp.results import write_json
from c3exp.utils.atomic import write_with

ANALYSIS_DIR = "analysis"
RECORD_FILE = "correlation.json"
CONFIG_KEY = "callbacks.channel_correlation"  # its entry in conf/callbacks/analysis.yaml


def metric_name(stage: int) -> str:
    return f"analysis/corr_stage{stage}"


def epoch_stem(epoch: int) -> str:
    return f"corr_epoch{epoch:03d}"


def first_batch(loader: DataLoader | list[DataLoader], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` (images, labels) a non-shuffled loader yields: the same ones every time."""
    loader = loader[0] if isinstance(loader, (list, tuple)) else loader
    images, labels, total = [], [], 0
    for batch_images, batch_labels, *_ in loader:
        images.append(batch_images.cpu())
        labels.append(batch_labels.cpu())
        total += len(batch_images)
        if total >= count:
            break
    return torch.cat(images)[:count], torch.cat(labels)[:count]


class ChannelCorrelation(L.Callback):
    """Logs analysis/corr_stage{i} (stage i = model.stages[i-1]) through the module, so every logger gets it.

    Only global rank 0 writes files; under DDP each rank takes its own shard's first images, and rank 0's are kept.
    """

    def __init__(self, out_dir: str, every_n_epochs: int = 1, num_images: int = 128, heatmaps: bool = True):
        check(isinstance(every_n_epochs, int) and every_n_epochs >= 1, f"{CONFIG_KEY}.every_n_epochs", every_n_epochs,
              "an integer >= 1")
        check(isinstance(num_images, int) and num_images >= 2, f"{CONFIG_KEY}.num_images", num_images,
              "an integer >= 2")
        self.out_dir = Path(out_dir)
        self.every_n_epochs, self.num_images, self.heatmaps = every_n_epochs, num_images, heatmaps
        self._images: torch.Tensor | None = None

    def _due(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return False
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._due(trainer):
            return
        if self._images is None:
            self._images = first_batch(trainer.val_dataloaders, self.num_images)[0]
        net = getattr(pl_module, "net", pl_module)
        correlations = stage_correlations(net, [self._images])
        pl_module.log_dict({metric_name(c.stage): c.mean_abs for c in correlations}, on_step=False, on_epoch=True)
        if trainer.is_global_zero:
            self._write(trainer, correlations)

    def _write(self, trainer: L.Trainer, correlations: list[StageCorrelation]) -> None:
        epoch = trainer.current_epoch
        stem = self.out_dir / epoch_stem(epoch)
        stem.parent.mkdir(parents=True, exist_ok=True)
        matrices = {f"stage{c.stage}": c.matrix for c in correlations}
        write_with(stem.with_suffix(".npz"), lambda file: np.savez_compressed(file, **matrices))
        record = {
            "epoch": epoch,
            "step": trainer.global_step,
            "images": len(self._images),
            "mean_abs_corr": [c.mean_abs for c in correlations],
            "constant_channels": [c.constant for c in correlations],
        }
        append_record(self.out_dir / RECORD_FILE, record)
        if self.heatmaps:
            titles = [f"stage {c.stage} (mean |corr| {c.mean_abs:.3f})" for c in correlations]
            png = correlation_heatmaps([c.matrix for c in correlations], titles,
                                       f"Channel correlation after epoch {epoch}", stem.with_suffix(".png"))
            log_image_to_wandb(trainer, png)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Replaces records of the same or a later epoch: a resumed run re-records the epochs after its checkpoint."""
    records = json.loads(path.read_text()) if path.is_file() else []
    records = [r for r in records if r["epoch"] < record["epoch"]] + [record]
    write_json(path, records)


def log_image_to_wandb(trainer: L.Trainer, png: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key="analysis/channel_correlation", images=[str(png)], step=trainer.global_step)


def load_correlation_history(run_dir: str | Path, label: str) -> CorrelationHistory:
    """What ChannelCorrelation recorded in `run_dir` (a run directory or its analysis folder)."""
    run_dir = Path(run_dir)
    folder = run_dir if (run_dir / RECORD_FILE).is_file() else run_dir / ANALYSIS_DIR
    records_path = folder / RECORD_FILE
    if not records_path.is_file():
        raise ConfigError("run_dir", str(run_dir), f"a run directory with {ANALYSIS_DIR}/{RECORD_FILE} "
                          "(train it with callbacks=analysis)")
    records = json.loads(records_path.read_text())
    matrices = []
    for record in records:
        with np.load(folder / f"{epoch_stem(record['epoch'])}.npz") as stored:
            matrices.append([stored[f"stage{i + 1}"] for i in range(len(stored.files))])
    return CorrelationHistory(
        label=label,
        epochs=[r["epoch"] for r in records],
        mean_abs=[r["mean_abs_corr"] for r in records],
        matrices=matrices,
    )
