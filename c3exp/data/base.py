"""The shared DataModule: in-memory uint8 image arrays, a seeded validation hold-out, standard augmentation."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from c3exp.data.device import DeviceBatches, RandomCropFlip, RandomErase
from c3exp.data.mixing import batch_mixing, mixing_collate
from c3exp.errors import check
from c3exp.schema import NonNegativeFloat, NonNegativeInt, PositiveInt, Probability


def per_process_batch_size(batch_size: int, world_size: int) -> int:
    """`data.batch_size` is the global batch: with N data-parallel processes each loads 1/N of it."""
    check(batch_size % world_size == 0, "data.batch_size", batch_size,
          f"a multiple of the {world_size} data-parallel processes")
    return batch_size // world_size


@dataclass
class ImageArrays:
    """A split held in memory: images (N, C, H, W) uint8 and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def subset(self, index: torch.Tensor) -> ImageArrays:
        return ImageArrays(self.images[index], self.labels[index])

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> ImageArrays:
        return ImageArrays(self.images.to(device), self.labels.to(device))


class ArrayDataset(Dataset):
    """Indexes an ImageArrays split (`repeats` times over) and applies a tensor transform to each image."""

    def __init__(self, arrays: ImageArrays, transform: Callable[[torch.Tensor], torch.Tensor], repeats: int = 1):
        self.arrays, self.transform, self.repeats = arrays, transform, repeats

    def __len__(self) -> int:
        return len(self.arrays) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index %= len(self.arrays)
        return self.transform(self.arrays.images[index]), int(self.arrays.labels[index])


class BatchedDataModule(L.LightningDataModule):
    """What every data module shares: the global data.batch_size split over processes, a DataLoader per split."""

    def __init__(self, batch_size: PositiveInt, eval_batch_size: PositiveInt | None, num_workers: NonNegativeInt):
        super().__init__()
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size or batch_size, num_workers

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def collate_fn(self, split: str) -> Callable[[list[Any]], Any] | None:
        return None  # default_collate

    def per_process_batch_size(self, split: str) -> int:
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        return per_process_batch_size(batch_size, self.trainer.world_size if self.trainer is not None else 1)

    def _loader(self, split: str) -> Any:
        return DataLoader(
            self.dataset(split), batch_size=self.per_process_batch_size(split),
            shuffle=split == "train", num_workers=self.num_workers, collate_fn=self.collate_fn(split),
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,  # workers seeded afresh from the per-epoch reseeded RNG: exact resume
        )

    def train_dataloader(self) -> Any:
        return self._loader("train")

    def val_dataloader(self) -> Any:
        return self._loader("val")

    def test_dataloader(self) -> Any:
        return self._loader("test")


ROLES_OF_STAGE = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class SplitsDataModule(BatchedDataModule):
    """Splits opened once by role (VOC, COCO); `seed`: kept for the config, augmentation draws from the global RNG."""

    def __init__(self, name: str, root: str, seed: int, **loading: Any) -> None:
        super().__init__(**loading)
        self.name, self.root, self.seed = name, Path(root).expanduser(), seed
        self.datasets: dict[str, Dataset] = {}

    def open_split(self, role: str) -> Dataset:
        """The checked, transformed samples of the split that plays `role`."""
        raise NotImplementedError

    def dataset(self, role: str) -> Dataset:
        if role not in self.datasets:
            self.datasets[role] = self.open_split(role)
        return self.datasets[role]

    def setup(self, stage: str | None = None) -> None:
        for role in ROLES_OF_STAGE.get(stage, ("train", "val", "test")):
            self.dataset(role)


class ImageDataModule(BatchedDataModule):
    """Splits from `load_arrays`; `val_split` held out by a fixed seed (0: test validates, the CIFAR papers' way)."""

    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.25, 0.25, 0.25)

    def __init__(
        self,
        name: str,
        num_classes: Annotated[int, at.Ge(2)] | None,  # null: imagefolder counts its class folders
        image_size: PositiveInt,
        channels: PositiveInt,
        val_split: Annotated[NonNegativeInt, "0: validate on the test split"],
        augment: bool,
        crop_padding: NonNegativeInt,
        hflip: bool,
        train_repeats: PositiveInt,
        on_device: bool,
        seed: int,
        mixup_alpha: Annotated[NonNegativeFloat, "the Beta distribution's alpha; 0: off"],
        cutmix_alpha: Annotated[NonNegativeFloat, "the Beta distribution's alpha; 0: off"],
        random_erasing: Annotated[Probability, "0: off"],
        **loading: Any,
    ):
        super().__init__(**loading)
        check(not on_device or type(self).load_arrays is not ImageDataModule.load_arrays, "data.on_device",
              on_device, f"false for data={name}: only datasets held in memory as arrays can live on the device")
        self.on_device, self.seed, self.train_repeats = on_device, seed, train_repeats
        self.name, self.num_classes, self.image_size, self.channels = name, num_classes, image_size, channels
        self.val_split, self.augment, self.crop_padding, self.hflip = val_split, augment, crop_padding, hflip
        self.mixup_alpha, self.cutmix_alpha, self.random_erasing = mixup_alpha, cutmix_alpha, random_erasing
        self.splits: dict[str, ImageArrays] | None = None

    def load_arrays(self, train: bool) -> ImageArrays:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self._split(self.load_arrays(train=True), self.load_arrays(train=False))

    def _split(self, train: ImageArrays, test: ImageArrays) -> dict[str, ImageArrays]:
        if self.val_split == 0:
            return {"train": train, "val": test, "test": test}
        check(self.val_split < len(train), "data.val_split", self.val_split,
              f"fewer than the {len(train)} training images")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        held_out, kept = order[: self.val_split], order[self.val_split:]
        return {"train": train.subset(kept), "val": train.subset(held_out), "test": test}

    def transform(self, train: bool) -> v2.Transform:
        """The CIFAR recipe: pad-and-crop plus flip for training (drawn as data.on_device draws them), normalisation."""
        crop_flip = train and self.augment and (self.crop_padding > 0 or self.hflip)
        steps = [RandomCropFlip(self.crop_padding, self.hflip)] if crop_flip else []
        normalize = v2.Normalize(list(self.mean), list(self.std))
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), normalize])

    def sample_transform(self, train: bool) -> v2.Transform:
        """`transform`, then random erasing of each normalised training image where random_erasing > 0."""
        transform = self.transform(train)
        return v2.Compose([transform, RandomErase(self.random_erasing)]) if train and self.random_erasing else transform

    def dataset(self, split: str) -> Dataset:
        self.setup()
        train = split == "train"
        return ArrayDataset(self.splits[split], self.sample_transform(train), repeats=self.train_repeats if train else 1)

    def batch_mixing(self) -> v2.Transform | None:
        """The MixUp/CutMix of whole training batches (None: off), built once num_classes is known (after setup)."""
        return batch_mixing(self.mixup_alpha, self.cutmix_alpha, self.num_classes)

    def collate_fn(self, split: str) -> Callable[[list[Any]], Any] | None:
        mix = self.batch_mixing() if split == "train" else None
        return partial(mixing_collate, mix) if mix is not None else None

    def _loader(self, split: str) -> DataLoader | DeviceBatches:
        return self.device_batches(split) if self.on_device else super()._loader(split)

    def device_batches(self, split: str) -> DeviceBatches:
        """`split` copied once to the training device, batched there; training: crop/flip where data.augment, erasing."""
        self.setup()
        trainer, train = self.trainer, split == "train"
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        self.splits[split] = self.splits[split].to(device)  # copied once: on its device, .to() returns the same tensors
        arrays, crop_flip = self.splits[split], train and self.augment
        return DeviceBatches(
            arrays.images, arrays.labels, self.per_process_batch_size(split), self.mean, self.std,
            padding=self.crop_padding if crop_flip else 0, hflip=crop_flip and self.hflip,
            erasing=self.random_erasing if train else 0.0, shuffle=train,
            repeats=self.train_repeats if train else 1, seed=self.seed,
            epoch=lambda: trainer.current_epoch if trainer is not None else 0,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            mix=self.batch_mixing() if train else None,
        )
