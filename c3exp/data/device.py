"""A whole in-memory dataset batched and augmented on its device (a GPU), without DataLoader workers.

CIFAR-sized data fits in GPU memory many times over; cropping, flipping and normalising a batch
there costs microseconds, where per-sample transforms in worker processes cost a CPU core per few
thousand images a second. Both paths draw the same random variables, (top, left, flip) per image,
through `draw_crop_flip`, and cut the same pixels for the same draws (tests/data/test_device.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from c3exp.training.callbacks import epoch_seed

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class CropFlipDraws:
    """The random variables of pad-and-crop plus flip for N images: offsets (N, 2) in [0, 2*pad], flips (N,)."""

    offsets: torch.Tensor
    flips: torch.Tensor

    def __getitem__(self, index: int) -> tuple[int, int, bool]:
        top, left = self.offsets[index].tolist()
        return top, left, bool(self.flips[index])


def draw_crop_flip(
    count: int, padding: int, hflip: bool, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> CropFlipDraws:
    """Uniform crop offsets in [0, 2*padding] (torchvision's RandomCrop) and p=0.5 flips (none if not hflip)."""
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator, device=device)
    flips = torch.rand(count, generator=generator, device=device) < 0.5
    return CropFlipDraws(offsets, flips & hflip)


def crop_flip_image(image: torch.Tensor, top: int, left: int, flip: bool, padding: int) -> torch.Tensor:
    """One (C, H, W) image: zero-pad by `padding`, cut the H x W window at (top, left), mirror it if `flip`."""
    height, width = image.shape[-2:]
    window = F.pad(image, (padding,) * 4)[:, top : top + height, left : left + width]
    return window.flip(-1) if flip else window


def crop_flip_batch(images: torch.Tensor, draws: CropFlipDraws, padding: int) -> torch.Tensor:
    """`crop_flip_image` for a whole (N, C, H, W) batch at once: one padded copy and one indexing gather."""
    count, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = draws.offsets[:, :1] + torch.arange(height, device=images.device)  # (N, H)
    cols = draws.offsets[:, 1:] + torch.arange(width, device=images.device)  # (N, W)
    cols = torch.where(draws.flips[:, None], cols.flip(1), cols)
    sample = torch.arange(count, device=images.device)[:, None, None]
    # advanced indices on dims 0, 2, 3 around a slice: the result is (N, H, W, C)
    return padded[sample, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] -> per-channel standardised, with the kernels v2.ToDtype/v2.Normalize use."""
    scaled = TF.to_dtype(images, torch.float32, scale=True)
    return TF.normalize(scaled.contiguous(), list(mean), list(std))


class RandomCropFlip:
    """The per-sample DataLoader transform: one `draw_crop_flip` from the global RNG per image.

    The global RNG is what the epoch reseeding (and DataLoader worker seeding) controls.
    """

    def __init__(self, padding: int, hflip: bool):
        self.padding, self.hflip = padding, hflip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, flip = draw_crop_flip(1, self.padding, self.hflip)[0]
        return crop_flip_image(image, top, left, flip, self.padding)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, hflip={self.hflip})"


@dataclass(frozen=True)
class Augmentation:
    """What the training split gets on the device: pad-and-crop by `padding` (0: none) and flips."""

    padding: int
    hflip: bool


class DeviceBatches:
    """Batches of an (images, labels) pair that lives on the device, one process's shard, in order or shuffled.

    Every pass draws its shuffling and augmentation from a generator seeded with
    epoch_seed(seed, epoch()): epoch e yields the same batches whether or not the run was resumed.
    With several data-parallel processes, the (shuffled) order is padded to a multiple of
    `world_size` and process `rank` takes every world_size-th index, as DistributedSampler does.
    `repeats` > 1 makes one pass several passes over the images (data.train_repeats).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augmentation: Augmentation | None = None,
        shuffle: bool = False,
        repeats: int = 1,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images, self.labels = images, labels
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.augmentation, self.shuffle, self.repeats = augmentation, shuffle, repeats
        self.seed, self.epoch = seed, epoch
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return -(-self.shard_size() // self.batch_size)

    def shard_size(self) -> int:
        return -(-len(self.labels) * self.repeats // self.world_size)

    def shard(self, generator: torch.Generator) -> torch.Tensor:
        """This process's indices for one pass (`repeats` passes over the images, as ArrayDataset does)."""
        total, device = len(self.labels) * self.repeats, self.labels.device
        order = torch.randperm(total, generator=generator, device=device) if self.shuffle else torch.arange(total, device=device)
        padded = torch.cat([order, order[: self.shard_size() * self.world_size - total]])
        return padded[self.rank :: self.world_size] % len(self.labels)

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator(device=self.labels.device).manual_seed(epoch_seed(self.seed, self.epoch()))
        for index in self.shard(generator).split(self.batch_size):
            yield self.batch(index, generator), self.labels[index]

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = self.images[index]
        if self.augmentation is not None:
            pad, hflip = self.augmentation.padding, self.augmentation.hflip
            images = crop_flip_batch(images, draw_crop_flip(len(index), pad, hflip, generator, images.device), pad)
        return normalize_batch(images, self.mean, self.std)
