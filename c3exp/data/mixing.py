"""MixUp and CutMix of whole training batches, the same torchvision transforms in both data paths.

MixUp (Zhang et al. 2018) blends each image with its neighbour in the batch, CutMix (Yun et al. 2019)
pastes a rectangle of the neighbour in; both mix the one-hot labels in the same proportion, so the
training labels become float (N, num_classes) probabilities. torchvision's v2.MixUp and v2.CutMix
draw their random variables from the global RNG, which c3exp reseeds per epoch (EpochSeed): epoch e
mixes alike whether or not the run was resumed. The DataLoader path mixes in its collate_fn (in the
workers), data.on_device in DeviceBatches' iterator.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2

from c3exp.errors import check


def batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int | None) -> v2.Transform | None:
    """v2.MixUp, v2.CutMix, or one of the two chosen with probability 0.5 per batch where both alphas are > 0
    (as torchvision's classification reference does); None where both are 0 (off)."""
    chosen = [(kind, alpha) for kind, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha > 0]
    if not chosen:
        return None
    check(num_classes is not None, "data.num_classes", num_classes,
          "the number of classes: data.mixup_alpha and data.cutmix_alpha mix one-hot labels")
    mixes = [kind(alpha=alpha, num_classes=num_classes) for kind, alpha in chosen]
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


class MixingCollate:
    """A DataLoader collate_fn: torch's default_collate, then `mix` on the whole (images, labels) batch.

    A class, not a closure, so that DataLoader workers started by spawn can unpickle it.
    """

    def __init__(self, mix: v2.Transform):
        self.mix = mix

    def __call__(self, samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_collate(samples)
        return self.mix(images, labels)
