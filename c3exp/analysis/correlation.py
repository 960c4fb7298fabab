"""Channel correlation at each stage's output (Fig. 4: C3 should decorrelate them), and its record during training."""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import lightning as L
import numpy as np
import torch
from torch import nn

from c3exp.analysis.plots import CorrelationHistory, correlation_heatmaps
from c3exp.errors import check
from c3exp.models.base import ResNet
from c3exp.results import RESULTS_FILE, read_results, write_json
from c3exp.schema import PositiveInt
from c3exp.utils.atomic import write_with
from c3exp.utils.modes import evaluating

ANALYSIS_DIR = "analysis"
RECORD_FILE = "correlation.json"
STEM = "corr_epoch{:03d}"  # epochs 0-based, as in results.json's history


class CorrelationAccumulator:
    """Float64 sums over batches, less the first batch's channel means: accurate where a mean dwarfs its spread."""

    def __init__(self) -> None:
        self.count, self.sum, self.outer = 0, 0, 0  # the sums become float64 tensors at the first update
        self.shift: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        """Add a (B, C, H, W) or (N, C) batch: each channel's responses are one row."""
        responses = features.detach().to(torch.float64).transpose(0, 1).flatten(1).cpu()
        if self.shift is None:
            self.shift = responses.mean(dim=1, keepdim=True)
        centred = responses - self.shift
        self.count += centred.shape[1]
        self.sum += centred.sum(dim=1)
        self.outer += centred @ centred.T

    def compute(self) -> np.ndarray:
        """The C x C Pearson matrix; NaN rows and columns for constant channels (variance < 1e-12 of mean square)."""
        if self.count < 2:
            raise ValueError("a channel correlation needs at least two responses per channel")
        mean = self.sum / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        variance = covariance.diagonal().clamp(min=0)
        mean_square = variance + (mean + self.shift.squeeze(1)) ** 2
        std = torch.where(variance > 1e-12 * mean_square, variance.sqrt(), torch.nan)
        return (covariance / torch.outer(std, std)).clamp(-1, 1).numpy()


def channel_correlation(features: torch.Tensor) -> np.ndarray:
    """The C x C Pearson correlation of the channels of one (B, C, H, W) map, as np.corrcoef of their responses."""
    accumulator = CorrelationAccumulator()
    accumulator.update(features)
    return accumulator.compute()


def mean_abs_off_diagonal(correlation: np.ndarray) -> float:
    """Mean |R[i, j]| over i != j, skipping the NaN pairs of constant channels (NaN if none is left)."""
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    values = np.abs(off_diagonal[~np.isnan(off_diagonal)])
    return float(values.mean()) if values.size else float("nan")


def stage_outputs(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The output of every stage of a c3exp network (stem -> stages), in order."""
    if not isinstance(model, ResNet):
        raise TypeError(f"{type(model).__name__} is not a c3exp network (c3exp.models.base.ResNet): no stages to read")
    return model.stage_outputs(images)


@dataclass(frozen=True)
class StageCorrelation:
    """One stage's channel correlation matrix over `images` images and its summary numbers (1 = model.stages[0])."""

    stage: int
    matrix: np.ndarray
    images: int

    @property
    def mean_abs(self) -> float:
        return mean_abs_off_diagonal(self.matrix)

    @property
    def constant(self) -> int:
        """How many channels never varied (their diagonal entry is NaN)."""
        return int(np.isnan(np.diagonal(self.matrix)).sum())


@torch.no_grad()
def stage_correlations(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[StageCorrelation]:
    """Channel correlation at every stage output over all `batches`, with the model in eval mode."""
    device = next(model.parameters()).device
    accumulators: list[CorrelationAccumulator] = []
    seen = 0
    with evaluating(model):
        for images in batches:  # counted as they are read: data.on_device's loader has no `.dataset`
            seen += len(images)
            outputs = stage_outputs(model, images.to(device))
            accumulators = accumulators or [CorrelationAccumulator() for _ in outputs]
            for accumulator, output in zip(accumulators, outputs):
                accumulator.update(output)
    if not accumulators:
        raise ValueError("no images to compute channel correlations on")
    return [StageCorrelation(index + 1, accumulator.compute(), seen) for index, accumulator in enumerate(accumulators)]


def save_matrices(correlations: Iterable[StageCorrelation], path: Path) -> None:
    """The matrices as stage1, stage2, ... of one compressed npz, written whole or not at all."""
    write_with(path, lambda file: np.savez_compressed(file, **{f"stage{c.stage}": c.matrix for c in correlations}))


def first_samples(loader: Any, count: int) -> list[tuple[Any, Any]]:
    """The first `count` (image, label or target) pairs a non-shuffled loader (or the first of a list) yields."""
    batches = loader[0] if isinstance(loader, (list, tuple)) else loader
    return list(itertools.islice((pair for images, labels, *_ in batches for pair in zip(images, labels)), count))


class ChannelCorrelation(L.Callback):
    """Logs analysis/corr_stage{i} (stage i = model.stages[i-1]) through the module; files only from global rank 0."""

    def __init__(self, out_dir: str, every_n_epochs: PositiveInt, num_images: Annotated[int, at.Ge(2)], heatmaps: bool):
        self.out_dir = Path(out_dir)
        self.every_n_epochs, self.num_images, self.heatmaps = every_n_epochs, num_images, heatmaps
        self._images: torch.Tensor | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch  # 0-based: due after every every_n_epochs-th one and the last
        due = (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == trainer.max_epochs
        if trainer.sanity_checking or trainer.state.fn != "fit" or not due:
            return
        if self._images is None:  # under DDP each rank's own shard: rank 0's are the ones recorded
            samples = first_samples(trainer.val_dataloaders, self.num_images)
            self._images = torch.stack([image.cpu() for image, _ in samples])
        correlations = stage_correlations(getattr(pl_module, "net", pl_module), [self._images])
        pl_module.log_dict({f"analysis/corr_stage{c.stage}": c.mean_abs for c in correlations}, on_step=False,
                           on_epoch=True)
        if not trainer.is_global_zero:
            return
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


def load_correlation_history(run_dir: str | Path, fallback: str) -> CorrelationHistory:
    """ChannelCorrelation's record in a run directory or its analysis folder, labelled as results.json or `fallback`."""
    run_dir = Path(run_dir)
    info = read_results(run_dir / RESULTS_FILE) if (run_dir / RESULTS_FILE).is_file() else None
    label = f"{info['model']} + {info['attn']}" if info else fallback
    folder = run_dir if (run_dir / RECORD_FILE).is_file() else run_dir / ANALYSIS_DIR
    check((folder / RECORD_FILE).is_file(), "run_dir", str(run_dir),
          f"a run directory with {ANALYSIS_DIR}/{RECORD_FILE} (train it with callbacks=analysis)")
    records = json.loads((folder / RECORD_FILE).read_text())
    matrices = []
    for record in records:
        with np.load(folder / f"{STEM.format(record['epoch'])}.npz") as stored:
            matrices.append([stored[f"stage{i}"] for i in range(1, len(stored.files) + 1)])
    return CorrelationHistory(label, [r["epoch"] for r in records], [r["mean_abs_corr"] for r in records], matrices)
