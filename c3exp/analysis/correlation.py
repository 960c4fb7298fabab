"""Channel correlation at each stage's output (the paper's Fig. 4: C3 should decorrelate channels).

Definition. For a stage output of shape (B, C, H, W), channel c's *response vector* X_c holds its
value at every one of the N = B*H*W (image, position) pairs. The stage's channel correlation is the
C x C Pearson matrix R[i, j] = cov(X_i, X_j) / (std(X_i) std(X_j)), i.e. exactly
``np.corrcoef(features.transpose(1, 0, 2, 3).reshape(C, -1))``. A channel that is constant over all N
responses (a ReLU channel that never fires) has no correlation: its row and column are NaN, as in
np.corrcoef. The summary number is the mean |R[i, j]| over the off-diagonal pairs i != j where both
channels vary: 0 for perfectly decorrelated channels, 1 for channels that are copies of each other.

Several batches give one matrix over all their responses: sums are accumulated in float64.
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
    """Running sums of channel responses for a Pearson matrix over batches that arrive one by one.

    Responses are shifted by the first batch's channel means before summing, so the float64 sums
    stay accurate even when a channel's mean is large next to its spread.
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
