"""data.on_device (c3exp/data/device.py): batched crop/flip/normalise/erase on the device, the same as the DataLoader
path, and exact resume."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from torchvision.transforms import v2

from c3exp.data import ArrayDataset, DigitsDataModule
from c3exp.data.device import (
    DeviceBatches,
    RandomCropFlip,
    RandomErase,
    crop_flip_batch,
    draw_crop_flip,
    draw_erasing,
    erase_batch,
    normalize_batch,
)
from c3exp.training.train import train
from tests.conftest import TINY_DIGITS, run_config, without_timing
from tests.data import data_module

MEAN, STD = DigitsDataModule.mean, DigitsDataModule.std
#: The DataLoader path's training transform at data.crop_padding=4, data.hflip=true.
RECIPE = v2.Compose([RandomCropFlip(4, True), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(list(MEAN), list(STD))])


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    datamodule = data_module("digits", batch_size=128, train_repeats=1)
    datamodule.setup()
    return datamodule


def torchvision_crop_flip(image: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    """The reference: torchvision's pad by 4, crop at (top, left) and horizontal flip of one image."""
    expected = TF.crop(TF.pad(image, [4]), top, left, *image.shape[-2:])
    return TF.horizontal_flip(expected) if flip else expected


def test_batched_crop_flip_cuts_the_same_pixels_as_per_image(digits):
    images = digits.splits["train"].images[:64]
    offsets, flips = draw_crop_flip(64, 4, True, torch.Generator().manual_seed(0))
    assert flips.any() and not flips.all()
    per_image = torch.stack([torchvision_crop_flip(image, *offsets[i].tolist(), bool(flips[i]))
                             for i, image in enumerate(images)])
    assert torch.equal(crop_flip_batch(images, offsets, flips, 4), per_image)


def test_crop_flip_is_torchvisions_pad_crop_flip(digits):
    image = digits.splits["train"].images[0]
    for top, left, flip in [(0, 0, False), (8, 3, True), (4, 4, False), (2, 8, True)]:
        offsets, flips = torch.tensor([[top, left]]), torch.tensor([flip])
        assert torch.equal(crop_flip_batch(image[None], offsets, flips, 4)[0], torchvision_crop_flip(image, top, left, flip))


def test_dataloader_path_and_device_path_agree_for_the_same_draws(digits):
    """The DataLoader transform draws (top, left, flip) once per image from the global RNG; replaying
    those draws through the batched path gives the same normalised tensors, bit for bit."""
    arrays = digits.splits["train"]
    dataset = ArrayDataset(arrays, RECIPE)
    torch.manual_seed(3)
    loader_images = torch.stack([dataset[i][0] for i in range(32)])
    torch.manual_seed(3)
    offsets, flips = map(torch.cat, zip(*[draw_crop_flip(1, 4, True) for _ in range(32)]))
    device_images = normalize_batch(crop_flip_batch(arrays.images[:32], offsets, flips, 4), MEAN, STD)
    assert torch.equal(device_images, loader_images)


def test_draws_cover_every_offset_and_flip_half_the_images():
    offsets, flips = draw_crop_flip(4000, 4, True, torch.Generator().manual_seed(1))
    assert set(offsets.unique().tolist()) == set(range(9))
    assert 0.45 < flips.float().mean().item() < 0.55
    assert not draw_crop_flip(100, 4, False, torch.Generator().manual_seed(1))[1].any()


def test_erasing_zeroes_exactly_the_drawn_rectangle():
    images = torch.ones(2, 2, 5, 8)
    draws = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])  # image 0: rows 1-3, columns 2-5; image 1: none
    expected = images.clone()
    expected[0, :, 1:4, 2:6] = 0
    assert torch.equal(erase_batch(images, draws), expected)


def test_drawn_rectangles_are_one_box_inside_the_image_with_nothing_outside_touched():
    images = torch.randn(256, 3, 32, 32).abs() + 1  # no pixel is 0 before erasing
    draws = draw_erasing(256, 32, 32, 0.5, torch.Generator().manual_seed(0))
    erased = erase_batch(images, draws)
    top, left, height, width = draws.T
    assert ((top + height <= 32) & (left + width <= 32) & (height < 32) & (width < 32)).all()
    assert 0.4 < (height > 0).float().mean() < 0.6
    for image, box, original in zip(erased, draws.tolist(), images):
        t, l, h, w = box
        zero = image == 0
        assert zero[:, t : t + h, l : l + w].all() and zero.sum() == 3 * h * w  # zeros exactly in the box
        outside = ~zero
        assert torch.equal(image[outside], original[outside])


def test_batched_erasing_zeroes_the_same_pixels_as_torchvisions_erase_per_image():
    images = torch.randn(64, 3, 32, 32)
    draws = draw_erasing(64, 32, 32, 0.5, torch.Generator().manual_seed(2))
    assert (draws[:, 2] > 0).any() and (draws[:, 2] == 0).any()
    per_image = torch.stack([TF.erase(image, *draws[i].tolist(), torch.zeros(())) for i, image in enumerate(images)])
    assert torch.equal(erase_batch(images, draws), per_image)


def test_erasing_probability_zero_changes_nothing():
    images = torch.randn(64, 3, 32, 32)
    draws = draw_erasing(64, 32, 32, 0.0, torch.Generator().manual_seed(0))
    assert not draws[:, 2:].any() and torch.equal(erase_batch(images, draws), images)
    assert torch.equal(RandomErase(0.0)(images[0]), images[0])


def test_erasing_rectangles_follow_torchvisions_distribution():
    """Side lengths as torchvision's RandomErasing draws them (area 2-33 %, aspect ratio log-uniform in [0.3, 3.3])."""
    torch.manual_seed(0)
    erasing, image = v2.RandomErasing(p=1.0), torch.zeros(3, 20, 20)
    reference = torch.tensor([[params["h"], params["w"]] for params in (erasing.make_params([image]) for _ in range(4000))])
    boxes = draw_erasing(4000, 20, 20, 1.0, torch.Generator().manual_seed(1))
    for stat in (lambda s: s.mean(0), lambda s: s.std(0), lambda s: s.prod(1).mean(), lambda s: (s[:, 0] > s[:, 1]).double().mean()):
        assert torch.allclose(stat(boxes[:, 2:].double()), stat(reference.double()), rtol=0.05)
    assert boxes[:, :2].min() == 0 and (boxes[:, :2] + boxes[:, 2:]).max() == 20  # every position is reachable
    small = draw_erasing(4000, 4, 4, 1.0, torch.Generator().manual_seed(1))  # where many draws do not fit
    assert (small[:, 2:] < 4).all() and (small[:, 2:] == 3).any()  # sides strictly inside the image, as torchvision's


def test_dataloader_path_and_device_path_erase_the_same_pixels_for_the_same_draws(digits):
    """The DataLoader path erases each normalised image after its crop/flip, drawing from the global RNG;
    replaying those draws through the batched path gives the same tensors, bit for bit."""
    arrays = digits.splits["train"]
    dataset = ArrayDataset(arrays, v2.Compose([RECIPE, RandomErase(0.5)]))
    torch.manual_seed(3)
    loader_images = torch.stack([dataset[i][0] for i in range(32)])
    torch.manual_seed(3)
    crops, erasures = zip(*[(draw_crop_flip(1, 4, True), draw_erasing(1, 32, 32, 0.5)) for _ in range(32)])
    offsets, flips = map(torch.cat, zip(*crops))
    erasures = torch.cat(erasures)
    assert 0 < (erasures[:, 2] > 0).sum() < 32
    device_images = erase_batch(normalize_batch(crop_flip_batch(arrays.images[:32], offsets, flips, 4), MEAN, STD), erasures)
    assert torch.equal(device_images, loader_images)


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
    on_device = data_module("digits", on_device=True, batch_size=16, train_repeats=2)
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
