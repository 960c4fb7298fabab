"""Running a network in eval mode for a while, whatever mode it was in."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (BN uses its running statistics) and no autograd; the model's own mode is restored after.

    Measurements taken mid-training (complexity counts, correlations, activation maps) must not
    leave a training network in eval mode, nor update its BN statistics.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
