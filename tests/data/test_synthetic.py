"""Synthetic tensors (c3exp/data/synthetic.py): deterministic and CIFAR-shaped."""
from __future__ import annotations

import numpy as np
import torch

from tests.data import data_module


def test_synthetic_is_deterministic_and_cifar_shaped():
    datamodule = data_module("synthetic", num_train=64, num_test=16)
    datamodule.setup()
    again = data_module("synthetic", num_train=64, num_test=16)
    again.setup()
    assert datamodule.splits["train"].images.shape == (64, 3, 32, 32)
    assert torch.equal(datamodule.splits["train"].images, again.splits["train"].images)
    assert np.all(datamodule.splits["test"].labels.numpy() < 100)
