"""A whole in-memory dataset batched and augmented on its device (a GPU), without DataLoader workers. Both paths
draw through `draw_crop_flip` and `draw_erasing` and apply the same batched kernels: the same pixels for the same draws."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for every (run seed, epoch) pair: device batches' and EpochSeed's reseeding."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1)


def draw_crop_flip(count: int, padding: int, hflip: bool, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) crop offsets uniform in [0, 2*padding] (torchvision's RandomCrop), (N,) p=0.5 flips (none if not hflip)."""
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator, device=device)
    flips = torch.rand(count, generator=generator, device=device) < 0.5
    return offsets, flips & hflip


def crop_flip_batch(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad each (C, H, W) image, cut its H x W window at its offsets, mirror it where flipped: one gather."""
    count, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (N, H)
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    sample = torch.arange(count, device=images.device)[:, None, None]
    # advanced indices on dims 0, 2, 3 around a slice: the result is (N, H, W, C)
    return padded[sample, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] -> per-channel standardised, with the kernels v2.ToDtype/v2.Normalize use."""
    scaled = TF.to_dtype(images, torch.float32, scale=True)
    return TF.normalize(scaled.contiguous(), list(mean), list(std))


@dataclass(frozen=True)
class RandomCropFlip:
    """The per-sample DataLoader transform: one `draw_crop_flip` per image from the global RNG (reseeded per epoch)."""

    padding: int
    hflip: bool

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return crop_flip_batch(image[None], *draw_crop_flip(1, self.padding, self.hflip), self.padding)[0]


#: Random erasing's rectangle (torchvision's RandomErasing defaults): area fraction, aspect ratio, draws per image.
ERASE_SCALE, ERASE_RATIO, ERASE_ATTEMPTS = (0.02, 0.33), (0.3, 3.3), 10


def draw_erasing(count: int, height: int, width: int, p: float, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """torchvision's RandomErasing (probability `p`) as (N, 4) rows (top, left, height, width), 0 x 0: none; all 10
    tries drawn at once, one stream for both paths; sides round in float32 (torchvision: float64): ~.5 may differ."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=device)

    erase = rand(count) < p
    area = height * width * (ERASE_SCALE[0] + (ERASE_SCALE[1] - ERASE_SCALE[0]) * rand(count, ERASE_ATTEMPTS))
    low, high = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    aspect = torch.exp(low + (high - low) * rand(count, ERASE_ATTEMPTS))
    sides = torch.stack([(area * aspect).sqrt().round(), (area / aspect).sqrt().round()], -1).long()  # (N, 10, 2)
    fits = (sides[..., 0] < height) & (sides[..., 1] < width)
    first = fits.int().argmax(1)  # the first fitting attempt (0 where none fits: masked below)
    sides = sides[torch.arange(count, device=sides.device), first] * (erase & fits.any(1))[:, None]
    corner = (rand(count, 2) * (torch.tensor([height, width], device=sides.device) - sides + 1)).long()
    return torch.cat([corner, sides], 1)


def erase_batch(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's drawn rectangle set to 0 (torchvision's erase): one mask of the rows and columns inside a box."""
    top, left, height, width = boxes.unbind(1)
    rows = torch.arange(images.shape[-2], device=images.device)
    cols = torch.arange(images.shape[-1], device=images.device)
    inside_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])  # (N, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])  # (N, W)
    return images.masked_fill((inside_rows[:, :, None] & inside_cols[:, None, :])[:, None], 0)


@dataclass(frozen=True)
class RandomErase:
    """The per-sample DataLoader transform: one `draw_erasing` from the global RNG per (normalised) image."""

    p: float

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return erase_batch(image[None], draw_erasing(1, *image.shape[-2:], self.p))[0]


@dataclass
class DeviceBatches:
    """One process's shard, drawn from epoch_seed(seed, epoch()): epoch e yields the same batches resumed or not.
    Training augmentation: pad-and-crop by `padding`, `hflip`, then erasing with probability `erasing` (0: off)."""

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    mean: Sequence[float]
    std: Sequence[float]
    padding: int = 0
    hflip: bool = False
    erasing: float = 0.0
    shuffle: bool = False
    repeats: int = 1
    seed: int = 0
    epoch: Callable[[], int] = lambda: 0
    rank: int = 0
    world_size: int = 1
    mix: Callable[[torch.Tensor, torch.Tensor], Batch] | None = None

    def __len__(self) -> int:
        return -(-self.shard_size() // self.batch_size)

    def shard_size(self) -> int:
        return -(-len(self.labels) * self.repeats // self.world_size)

    def shard(self, generator: torch.Generator) -> torch.Tensor:
        """This process's indices for one pass (`repeats` passes over the images, as ArrayDataset does)."""
        total, device = len(self.labels) * self.repeats, self.labels.device
        order = (torch.randperm(total, generator=generator, device=device) if self.shuffle
                 else torch.arange(total, device=device))
        padded = torch.cat([order, order[: self.shard_size() * self.world_size - total]])
        return padded[self.rank :: self.world_size] % len(self.labels)

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator(device=self.labels.device).manual_seed(epoch_seed(self.seed, self.epoch()))
        for index in self.shard(generator).split(self.batch_size):
            images, labels = self.batch(index, generator), self.labels[index]
            yield self.mix(images, labels) if self.mix is not None else (images, labels)

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = self.images[index]
        if self.padding > 0 or self.hflip:
            offsets, flips = draw_crop_flip(len(index), self.padding, self.hflip, generator, images.device)
            images = crop_flip_batch(images, offsets, flips, self.padding)
        images = normalize_batch(images, self.mean, self.std)
        if self.erasing > 0:
            height, width = images.shape[-2:]
            images = erase_batch(images, draw_erasing(len(index), height, width, self.erasing, generator, images.device))
        return images
