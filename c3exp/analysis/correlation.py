"""Channel correlation at each stage's output (Fig. 4: C3 should decorrelate them): np.corrcoef over B*H*W responses.

A constant channel's row and column are NaN, as in np.corrcoef; the summary is mean |R[i, j]| over varying i != j
(0: decorrelated, 1: copies). Several batches give one matrix: sums are accumulated in float64.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from c3exp.models.base import ResNet
from c3exp.utils.modes import evaluating

#: A channel whose variance is below this fraction of its mean square is treated as constant.
CONSTANT_TOLERANCE = 1e-12


def response_vectors(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) or (N, C) -> (C, N) in float64: one row of N responses per channel."""
    if features.dim() == 2:
        return features.detach().to(torch.float64).T.cpu()
    channels = features.shape[1]
    return features.detach().to(torch.float64).transpose(0, 1).reshape(channels, -1).cpu()


class CorrelationAccumulator:
    """Running float64 sums for a Pearson matrix over batches.

    Shifted by the first batch's channel means: the sums stay accurate when a mean is large next to its spread.
    """

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        responses = response_vectors(features)
        if self.shift is None:
            self.shift = responses.mean(dim=1, keepdim=True)
            self.sum = torch.zeros(responses.shape[0], dtype=torch.float64)
            self.outer = torch.zeros(responses.shape[0], responses.shape[0], dtype=torch.float64)
        centred = responses - self.shift
        self.count += centred.shape[1]
        self.sum += centred.sum(dim=1)
        self.outer += centred @ centred.T

    def compute(self) -> np.ndarray:
        """The C x C Pearson matrix (NaN rows and columns for constant channels)."""
        if self.count < 2 or self.outer is None:
            raise ValueError("a channel correlation needs at least two responses per channel")
        mean = self.sum / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        variance = covariance.diagonal().clamp(min=0)
        mean_square = variance + (mean + self.shift.squeeze(1)) ** 2
        std = torch.where(variance > CONSTANT_TOLERANCE * mean_square, variance.sqrt(), torch.nan)
        correlation = (covariance / torch.outer(std, std)).clamp(-1, 1)
        return correlation.numpy()


def channel_correlation(features: torch.Tensor) -> np.ndarray:
    """The C x C Pearson correlation of the channels of one (B, C, H, W) map (see the module doc)."""
    accumulator = CorrelationAccumulator()
    accumulator.update(features)
    return accumulator.compute()


def mean_abs_off_diagonal(correlation: np.ndarray) -> float:
    """Mean |R[i, j]| over i != j, skipping the NaN pairs of constant channels (NaN if none is left)."""
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    values = np.abs(off_diagonal[~np.isnan(off_diagonal)])
    return float(values.mean()) if values.size else float("nan")


def constant_channels(correlation: np.ndarray) -> int:
    """How many channels never varied (their diagonal entry is NaN)."""
    return int(np.isnan(np.diagonal(correlation)).sum())


def stage_outputs(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The output of every stage of a c3exp network (stem -> stages), in order."""
    if not isinstance(model, ResNet):
        raise TypeError(f"{type(model).__name__} is not a c3exp network (c3exp.models.base.ResNet): no stages to read")
    return model.stage_outputs(images)


@dataclass(frozen=True)
class StageCorrelation:
    """One stage's channel correlation matrix and its summary numbers (stage 1 = model.stages[0])."""

    stage: int
    matrix: np.ndarray

    @property
    def mean_abs(self) -> float:
        return mean_abs_off_diagonal(self.matrix)

    @property
    def constant(self) -> int:
        return constant_channels(self.matrix)


@torch.no_grad()
def stage_correlations(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[StageCorrelation]:
    """Channel correlation at every stage output over all `batches`, with the model in eval mode."""
    device = next(model.parameters()).device
    accumulators: list[CorrelationAccumulator] = []
    with evaluating(model):
        for images in batches:
            outputs = stage_outputs(model, images.to(device))
            accumulators = accumulators or [CorrelationAccumulator() for _ in outputs]
            for accumulator, output in zip(accumulators, outputs):
                accumulator.update(output)
    if not accumulators:
        raise ValueError("no images to compute channel correlations on")
    return [StageCorrelation(index + 1, accumulator.compute()) for index, accumulator in enumerate(accumulators)]
