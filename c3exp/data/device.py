"""A whole in-memory dataset batched and augmented on its device (a GPU), without DataLoader workers. Both paths
draw through `draw_crop_flip` and `draw_erasing` and change the same pixels for the same draws."""
from __future__ import annotations

import math
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


def draw_crop_flip(count: int, padding: int, hflip: bool, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> CropFlipDraws:
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


@dataclass(frozen=True)
class RandomCropFlip:
    """The per-sample DataLoader transform: one `draw_crop_flip` per image from the global RNG (reseeded per epoch)."""

    padding: int
    hflip: bool

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, flip = draw_crop_flip(1, self.padding, self.hflip)[0]
        return crop_flip_image(image, top, left, flip, self.padding)


#: Random erasing's rectangle (torchvision's RandomErasing defaults): area fraction, aspect ratio, draws per image.
ERASE_SCALE, ERASE_RATIO, ERASE_ATTEMPTS = (0.02, 0.33), (0.3, 3.3), 10


@dataclass(frozen=True)
class EraseDraws:
    """The rectangles random erasing zeroes in N images: (N, 4) rows of (top, left, height, width); 0 x 0: none."""

    boxes: torch.Tensor

    def __getitem__(self, index: int) -> tuple[int, int, int, int]:
        return tuple(self.boxes[index].tolist())


def draw_erasing(count: int, height: int, width: int, p: float, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> EraseDraws:
    """torchvision's RandomErasing (probability `p`), all 10 tries drawn at once so both paths share one stream; sides
    round half to even in float32 (torchvision: float64), so one within float32 error of .5 may differ."""

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
    return EraseDraws(torch.cat([corner, sides], 1))


def erase_image(image: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """One (C, H, W) image with its `height` x `width` rectangle at (top, left) set to 0 (torchvision's erase)."""
    return TF.erase(image, top, left, height, width, torch.zeros((), dtype=image.dtype))


def erase_batch(images: torch.Tensor, draws: EraseDraws) -> torch.Tensor:
    """`erase_image` for a whole (N, C, H, W) batch at once: one mask of the rows and columns inside each box."""
    top, left, height, width = draws.boxes.unbind(1)
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
        return erase_image(image, *draw_erasing(1, *image.shape[-2:], self.p)[0])


@dataclass(frozen=True)
class Augmentation:
    """On-device training augmentation; 0 turns `padding` or `erasing` (a probability) off."""

    padding: int
    hflip: bool
    erasing: float = 0.0


@dataclass
class DeviceBatches:
    """One process's shard, drawn from epoch_seed(seed, epoch()): epoch e yields the same batches resumed or not."""

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    mean: Sequence[float]
    std: Sequence[float]
    augmentation: Augmentation | None = None
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
        images, augmentation = self.images[index], self.augmentation
        if augmentation is not None and (augmentation.padding > 0 or augmentation.hflip):
            pad, hflip = augmentation.padding, augmentation.hflip
            images = crop_flip_batch(images, draw_crop_flip(len(index), pad, hflip, generator, images.device), pad)
        images = normalize_batch(images, self.mean, self.std)
        if augmentation is not None and augmentation.erasing > 0:
            height, width = images.shape[-2:]
            draws = draw_erasing(len(index), height, width, augmentation.erasing, generator, images.device)
            images = erase_batch(images, draws)
        return images
