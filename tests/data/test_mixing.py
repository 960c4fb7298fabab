"""MixUp and CutMix of whole batches (c3exp/data/mixing.py): images and labels mix in the same proportion."""
from __future__ import annotations

import pickle
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from c3exp.data.mixing import batch_mixing, mixing_collate
from c3exp.errors import ConfigError

CLASSES = 8


def constant_batch(count: int = CLASSES, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant i + 1 (no two alike, none 0) and has label i: every mixed pixel shows its sources."""
    images = torch.arange(1, count + 1, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()
    return images, torch.arange(count)


def test_mixup_blends_images_and_labels_with_the_same_lambda():
    images, labels = constant_batch()
    torch.manual_seed(0)
    mixed, probabilities = batch_mixing(0.4, 0.0, CLASSES)(images, labels)
    assert probabilities.shape == (CLASSES, CLASSES) and probabilities.dtype == torch.float32
    lam = probabilities[0, 0].item()  # image 0's own class; its partner is the previous image (roll by 1)
    assert 0 < lam < 1
    onehot = F.one_hot(labels, CLASSES).float()
    assert torch.allclose(probabilities, lam * onehot + (1 - lam) * onehot.roll(1, 0))
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.roll(1, 0))


def pasted_box(mixed: torch.Tensor, own: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """The (H, W) mask of the pixels CutMix took from the partner image; every pixel is one or the other."""
    from_partner = (mixed == partner).all(0)
    assert torch.equal(from_partner | (mixed == own).all(0), torch.ones_like(from_partner))
    return from_partner


def test_cutmix_weights_each_label_by_the_area_of_the_actual_box():
    images, labels = constant_batch()
    mix = batch_mixing(0.0, 1.0, CLASSES)
    partial = 0
    for seed in range(6):
        torch.manual_seed(seed)
        mixed, probabilities = mix(images, labels)
        box = pasted_box(mixed[0], images[0], images[-1])
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if len(rows):  # one rectangle: the pasted pixels fill the span of their rows and columns
            assert box.sum() == len(rows) * len(cols) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        unpasted = 1 - box.sum().item() / box.numel()
        partial += 0 < unpasted < 1
        # every image gets the same box from its partner, and its own label keeps the unpasted fraction
        assert all(torch.equal(pasted_box(mixed[i], images[i], images[i - 1]), box) for i in range(CLASSES))
        assert probabilities[:, labels].diagonal() == pytest.approx([unpasted] * CLASSES)
        assert probabilities[torch.arange(CLASSES), labels.roll(1, 0)] == pytest.approx([1 - unpasted] * CLASSES)
    assert partial >= 3  # the test saw real boxes, not only all-or-nothing ones


def test_both_on_choose_mixup_or_cutmix_per_batch_with_probability_half():
    images, labels = constant_batch()
    mix = batch_mixing(1.0, 1.0, CLASSES)
    torch.manual_seed(0)
    kinds = []
    for _ in range(40):
        mixed, _ = mix(images, labels)
        cut = bool(((mixed == images) | (mixed == images.roll(1, 0))).all())  # CutMix only copies pixels
        kinds.append("cutmix" if cut else "mixup")
    assert 10 <= kinds.count("cutmix") <= 30 and 10 <= kinds.count("mixup") <= 30


def test_off_is_none_and_mixing_needs_the_number_of_classes():
    assert batch_mixing(0.0, 0.0, None) is None
    with pytest.raises(ConfigError) as error:
        batch_mixing(0.2, 0.0, None)
    assert error.value.key == "data.num_classes" and "\n" not in str(error.value)


def test_the_collate_mixes_the_default_collated_batch_and_survives_pickling():
    """DataLoader workers started by spawn unpickle their collate_fn."""
    images, labels = constant_batch()
    samples = [(image, int(label)) for image, label in zip(images, labels)]
    collate = pickle.loads(pickle.dumps(partial(mixing_collate, batch_mixing(0.4, 0.0, CLASSES))))
    torch.manual_seed(1)
    mixed, probabilities = collate(samples)
    torch.manual_seed(1)
    expected_images, expected_probabilities = batch_mixing(0.4, 0.0, CLASSES)(images, labels)
    assert torch.equal(mixed, expected_images) and torch.equal(probabilities, expected_probabilities)
    assert not torch.equal(mixed, images)
