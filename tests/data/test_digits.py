"""The bundled digits (c3exp/data/digits.py): real images, a fixed split, normalisation from the data."""
from __future__ import annotations

import pytest
import torch

from tests.data import data_module


def test_digits_are_real_images_with_a_fixed_split():
    first = data_module("digits", batch_size=128, train_repeats=1)
    second = data_module("digits", batch_size=128, train_repeats=1)
    first.setup()
    second.setup()
    sizes = {split: len(arrays) for split, arrays in first.splits.items()}
    assert sizes == {"train": 1797 - 359 - 180, "val": 180, "test": 359}
    for split in first.splits:
        assert torch.equal(first.splits[split].labels, second.splits[split].labels)
        assert torch.equal(first.splits[split].images, second.splits[split].images)
    _, train_index, test_index = first._partition()
    assert len(set(train_index.tolist()) | set(test_index.tolist())) == 1797
    assert not set(train_index.tolist()) & set(test_index.tolist())
    images = first.splits["train"].images
    assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.uint8
    assert images.float().std() > 50  # real strokes on a dark background, not a constant
    assert set(first.splits["test"].labels.tolist()) == set(range(10))


def test_digits_normalisation_constants_are_the_data_statistics():
    """Normalised digits have zero mean and unit spread over the images training may see."""
    data = data_module("digits", batch_size=128, train_repeats=1)
    everything, train_index, _ = data._partition()
    pixels = everything.subset(train_index).images.float() / 255
    assert data.mean == pytest.approx((pixels.mean().item(),) * 3, abs=5e-4)
    assert data.std == pytest.approx((pixels.std().item(),) * 3, abs=5e-4)
