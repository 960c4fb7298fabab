"""Maps of the most activated last-stage channels (Fig. 6), upsampled to the image and each scaled to [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from c3exp.utils.modes import evaluating


def rank_channels(features: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, k): the k channels of largest mean activation; stable, so ties keep the lower index first."""
    if not 1 <= k <= features.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the {features.shape[1]} channels")
    return torch.argsort(features.mean(dim=(2, 3)), dim=1, descending=True, stable=True)[:, :k]


@dataclass(frozen=True)
class ChannelMaps:
    """The top-k channels of each image, their mean activations and their upsampled maps."""

    channels: torch.Tensor  # (B, k) channel indices, most activated first
    scores: torch.Tensor  # (B, k) their mean activations
    maps: torch.Tensor  # (B, k, H_image, W_image), each in [0, 1]
    predictions: torch.Tensor  # (B,) the network's predicted classes


@torch.no_grad()
def top_channel_maps(model: nn.Module, images: torch.Tensor, k: int) -> ChannelMaps:
    """The k most activated last-stage channels of each image, in eval mode."""
    with evaluating(model):
        features = model.forward_features(images)
        predictions = model.head(features).argmax(dim=1)
    channels = rank_channels(features, k)
    picked = features.gather(1, channels[:, :, None, None].expand(-1, -1, *features.shape[2:]))
    upsampled = F.interpolate(picked, size=images.shape[-2:], mode="bilinear", align_corners=False)
    low = upsampled.amin(dim=(2, 3), keepdim=True)
    span = upsampled.amax(dim=(2, 3), keepdim=True) - low
    maps = (upsampled - low) / torch.where(span > 0, span, torch.inf)  # each in [0, 1]; a flat map all zeros
    scores = features.mean(dim=(2, 3)).gather(1, channels)
    return ChannelMaps(channels.cpu(), scores.cpu(), maps.cpu(), predictions.cpu())
