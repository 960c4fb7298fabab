"""Each stage's channel correlation during training, on fixed val images: correlation.json, corr_epoch*.npz/png."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import lightning as L
import numpy as np
import torch

from c3exp.analysis.correlation import StageCorrelation, save_matrices, stage_correlations
from c3exp.analysis.plots import CorrelationHistory, correlation_heatmaps
from c3exp.errors import ConfigError
from c3exp.results import write_json
from c3exp.schema import PositiveInt, check_settings

ANALYSIS_DIR = "analysis"
RECORD_FILE = "correlation.json"
STEM = "corr_epoch{:03d}"  # epochs 0-based, as in results.json's history


def first_samples(loader: Any, count: int) -> list[tuple[Any, Any]]:
    """The first `count` (image, label or target) pairs a non-shuffled loader (or the first of a list) yields."""
    loader = loader[0] if isinstance(loader, (list, tuple)) else loader
    samples: list[tuple[Any, Any]] = []
    for images, labels, *_ in loader:
        samples += zip(images, labels)
        if len(samples) >= count:
            break
    return samples[:count]


class ChannelCorrelation(L.Callback):
    """Logs analysis/corr_stage{i} (stage i = model.stages[i-1]) through the module; files only from global rank 0."""

    def __init__(self, out_dir: str, every_n_epochs: PositiveInt = 1, num_images: Annotated[int, at.Ge(2)] = 128,
                 heatmaps: bool = True):
        check_settings(dict(every_n_epochs=every_n_epochs, num_images=num_images), ChannelCorrelation,
                       "callbacks.channel_correlation.")  # its entry in conf/callbacks/analysis.yaml
        self.out_dir = Path(out_dir)
        self.every_n_epochs, self.num_images, self.heatmaps = every_n_epochs, num_images, heatmaps
        self._images: torch.Tensor | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        due = epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs
        if trainer.sanity_checking or trainer.state.fn != "fit" or not due:
            return
        if self._images is None:  # under DDP each rank's own shard: rank 0's are the ones recorded
            samples = first_samples(trainer.val_dataloaders, self.num_images)
            self._images = torch.stack([image.cpu() for image, _ in samples])
        correlations = stage_correlations(getattr(pl_module, "net", pl_module), [self._images])
        pl_module.log_dict({f"analysis/corr_stage{c.stage}": c.mean_abs for c in correlations}, on_step=False,
                           on_epoch=True)
        if trainer.is_global_zero:
            self._write(trainer, correlations)

    def _write(self, trainer: L.Trainer, correlations: list[StageCorrelation]) -> None:
        epoch = trainer.current_epoch
        stem = self.out_dir / STEM.format(epoch)
        stem.parent.mkdir(parents=True, exist_ok=True)
        save_matrices(correlations, stem.with_suffix(".npz"))
        append_record(self.out_dir / RECORD_FILE, dict(
            epoch=epoch, step=trainer.global_step, images=len(self._images),
            mean_abs_corr=[c.mean_abs for c in correlations], constant_channels=[c.constant for c in correlations]))
        if self.heatmaps:
            titles = [f"stage {c.stage} (mean |corr| {c.mean_abs:.3f})" for c in correlations]
            png = correlation_heatmaps([c.matrix for c in correlations], titles,
                                       f"Channel correlation after epoch {epoch}", stem.with_suffix(".png"))
            log_image_to_wandb(trainer, png)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Replaces records of the same or a later epoch: a resumed run re-records the epochs after its checkpoint."""
    records = json.loads(path.read_text()) if path.is_file() else []
    write_json(path, [r for r in records if r["epoch"] < record["epoch"]] + [record])


def log_image_to_wandb(trainer: L.Trainer, png: Path) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, L.pytorch.loggers.WandbLogger):
            logger.log_image(key="analysis/channel_correlation", images=[str(png)], step=trainer.global_step)


def load_correlation_history(run_dir: str | Path, label: str) -> CorrelationHistory:
    """What ChannelCorrelation recorded in `run_dir` (a run directory or its analysis folder)."""
    run_dir = Path(run_dir)
    folder = run_dir if (run_dir / RECORD_FILE).is_file() else run_dir / ANALYSIS_DIR
    if not (folder / RECORD_FILE).is_file():
        raise ConfigError("run_dir", str(run_dir), f"a run directory with {ANALYSIS_DIR}/{RECORD_FILE} "
                          "(train it with callbacks=analysis)")
    records = json.loads((folder / RECORD_FILE).read_text())
    matrices = []
    for record in records:
        with np.load(folder / f"{STEM.format(record['epoch'])}.npz") as stored:
            matrices.append([stored[f"stage{i}"] for i in range(1, len(stored.files) + 1)])
    return CorrelationHistory(label, [r["epoch"] for r in records], [r["mean_abs_corr"] for r in records], matrices)
