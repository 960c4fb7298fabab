"""data.on_device (c3exp/data/device.py): batched crop/flip/normalise on the device, the same as the DataLoader path,
and exact resume."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from c3exp.data import ArrayDataset, DigitsDataModule, build_transforms
from c3exp.data.device import (
    CropFlipDraws,
    DeviceBatches,
    crop_flip_batch,
    crop_flip_image,
    draw_crop_flip,
    normalize_batch,
)
from c3exp.train import train
from tests.conftest import TINY_DIGITS, run_config, without_timing

MEAN, STD = DigitsDataModule.mean, DigitsDataModule.std


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule(name="digits", num_classes=10, num_workers=0, val_split=180)
    datamodule.setup()
    return datamodule


def test_batched_crop_flip_cuts_the_same_pixels_as_per_image(digits):
    images = digits.splits["train"].images[:64]
    draws = draw_crop_flip(64, 4, True, torch.Generator().manual_seed(0))
    assert draws.flips.any() and not draws.flips.all()
    per_image = torch.stack([crop_flip_image(image, *draws[i], 4) for i, image in enumerate(images)])
    assert torch.equal(crop_flip_batch(images, draws, 4), per_image)


def test_crop_flip_is_torchvisions_pad_crop_flip(digits):
    image = digits.splits["train"].images[0]
    for top, left, flip in [(0, 0, False), (8, 3, True), (4, 4, False), (2, 8, True)]:
        expected = TF.crop(TF.pad(image, [4]), top, left, 32, 32)
        expected = TF.horizontal_flip(expected) if flip else expected
        assert torch.equal(crop_flip_image(image, top, left, flip, 4), expected)


def test_dataloader_path_and_device_path_agree_for_the_same_draws(digits):
    """The DataLoader transform draws (top, left, flip) once per image from the global RNG; replaying
    those draws through the batched path gives the same normalised tensors, bit for bit."""
    arrays = digits.splits["train"]
    dataset = ArrayDataset(arrays, build_transforms(MEAN, STD, train=True, crop_padding=4, hflip=True))
    torch.manual_seed(3)
    loader_images = torch.stack([dataset[i][0] for i in range(32)])
    torch.manual_seed(3)
    draws = [draw_crop_flip(1, 4, True) for _ in range(32)]
    replayed = CropFlipDraws(torch.cat([d.offsets for d in draws]), torch.cat([d.flips for d in draws]))
    device_images = normalize_batch(crop_flip_batch(arrays.images[:32], replayed, 4), MEAN, STD)
    assert torch.equal(device_images, loader_images)


def test_draws_cover_every_offset_and_flip_half_the_images():
    draws = draw_crop_flip(4000, 4, True, torch.Generator().manual_seed(1))
    assert set(draws.offsets.unique().tolist()) == set(range(9))
    assert 0.45 < draws.flips.float().mean().item() < 0.55
    assert not draw_crop_flip(100, 4, False, torch.Generator().manual_seed(1)).flips.any()


def batches(labels: torch.Tensor, **kwargs) -> DeviceBatches:
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return DeviceBatches(images, labels, mean=(0.0,) * 3, std=(1 / 255,) * 3, **kwargs)


def test_shuffling_depends_on_seed_and_epoch_only():
    labels = torch.arange(50)
    order = lambda epoch, seed=0: torch.cat([y for _, y in batches(labels, batch_size=8, shuffle=True, seed=seed, epoch=lambda: epoch)])
    assert torch.equal(order(3), order(3)) and sorted(order(3).tolist()) == list(range(50))
    assert not torch.equal(order(3), order(4)) and not torch.equal(order(3), order(3, seed=1))
    images, labels_out = next(iter(batches(labels, batch_size=8, shuffle=True, epoch=lambda: 3)))
    assert torch.equal(images[:, 0, 0, 0], labels_out.float())  # images travel with their labels


def test_processes_take_disjoint_shards_and_repeats_multiply_an_epoch():
    labels = torch.arange(10)
    shards = [torch.cat([y for _, y in batches(labels, batch_size=4, shuffle=True, rank=r, world_size=3)]) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to a multiple of 3, as DistributedSampler does
    assert set(torch.cat(shards).tolist()) == set(range(10))
    repeated = batches(labels, batch_size=4, shuffle=True, repeats=3)
    assert len(repeated) == 8 and sorted(torch.cat([y for _, y in repeated]).tolist()) == sorted(list(range(10)) * 3)


def test_on_device_datamodule_batches_like_the_loader(digits):
    on_device = DigitsDataModule(name="digits", num_classes=10, num_workers=0, val_split=180, on_device=True,
                                 batch_size=16, train_repeats=2)
    images, labels = next(iter(on_device.val_dataloader()))
    loader_images, loader_labels = next(iter(digits.val_dataloader()))
    assert torch.equal(labels, loader_labels[:16]) and torch.equal(images, loader_images[:16])
    train_images, _ = next(iter(on_device.train_dataloader()))
    assert train_images.shape == (16, 3, 32, 32) and train_images.dtype == torch.float32
    assert len(on_device.train_dataloader()) == -(-len(on_device.splits["train"]) * 2 // 16)


SHORT = TINY_DIGITS + ["model=resnet20", "attn=none", "data.on_device=true", "trainer.limit_train_batches=3",
                       "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


@pytest.mark.slow
def test_on_device_training_runs_and_resumes_exactly(tmp_path):
    straight = train(run_config(SHORT + ["trainer.max_epochs=3"], tmp_path / "straight"))
    first_leg = train(run_config(SHORT + ["trainer.max_epochs=2"], tmp_path / "first"))
    resumed = train(run_config(SHORT + ["trainer.max_epochs=3", f"ckpt_path={first_leg['checkpoints']['last']}"],
                               tmp_path / "resumed"))
    assert [row["epoch"] for row in resumed["history"]] == [0, 1, 2]
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
    assert resumed["test_acc1"] == straight["test_acc1"]
    losses = [row["train/loss"] for row in straight["history"]]
    assert len(set(losses)) == 3  # every epoch sees other batches
