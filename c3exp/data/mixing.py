"""MixUp/CutMix of training batches from the global RNG, which EpochSeed reseeds: a resumed epoch mixes the same."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2

from c3exp.errors import check


def batch_mixing(mixup_alpha: float, cutmix_alpha: float, num_classes: int | None) -> v2.Transform | None:
    """MixUp, CutMix, or one of them per batch where both alphas are > 0 (torchvision's reference); None: off."""
    chosen = [(kind, alpha) for kind, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha > 0]
    if not chosen:
        return None
    check(num_classes is not None, "data.num_classes", num_classes,
          "the number of classes: data.mixup_alpha and data.cutmix_alpha mix one-hot labels")
    mixes = [kind(alpha=alpha, num_classes=num_classes) for kind, alpha in chosen]
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def mixing_collate(mix: v2.Transform, samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """default_collate, then `mix` on the whole batch; partial(mixing_collate, mix) pickles for spawned workers."""
    return mix(*default_collate(samples))
