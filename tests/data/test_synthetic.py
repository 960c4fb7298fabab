"""Synthetic tensors (c3exp/data/synthetic.py): deterministic and CIFAR-shaped."""
from __future__ import annotations

import numpy as np
import torch

from c3exp.data import SyntheticDataModule


def test_synthetic_is_deterministic_and_cifar_shaped():
    datamodule = SyntheticDataModule(name="synthetic", num_classes=100, num_train=64, num_test=16, num_workers=0)
    datamodule.setup()
    again = SyntheticDataModule(name="synthetic", num_classes=100, num_train=64, num_test=16, num_workers=0)
    again.setup()
    assert datamodule.splits["train"].images.shape == (64, 3, 32, 32)
    assert torch.equal(datamodule.splits["train"].images, again.splits["train"].images)
    assert np.all(datamodule.splits["test"].labels.numpy() < 100)
