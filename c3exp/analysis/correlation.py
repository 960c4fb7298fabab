"""Channel correlation at each stage's output (Fig. 4: C3 should decorrelate them): np.corrcoef over B*H*W responses."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from c3exp.models.base import ResNet
from c3exp.utils.atomic import write_with
from c3exp.utils.modes import evaluating

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
