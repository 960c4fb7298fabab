"""VOC segmentation via torchvision, DeepLab's augmentation; evaluation pads batches to their largest image."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import annotated_types as at
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors
from torchvision.datasets.voc import DATASET_YEAR_DICT
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from c3exp.data.base import SplitsDataModule
from c3exp.errors import DataNotFoundError, check
from c3exp.schema import PositiveFloat, PositiveInt

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
KNOWN_LISTS = ("train", "trainval", "val", "train_aug")  # torchvision's VOCSegmentation reads all but SBD's train_aug
Year = Literal["2007", "2008", "2009", "2010", "2011", "2012"]  # torchvision's VOC years
Sample = tuple[torch.Tensor, torch.Tensor]


class SBDAugmentedVOC(datasets.VOCSegmentation):
    """SBD's 'train_aug' in DeepLab's layout: ImageSets/Segmentation/train_aug.txt, masks in SegmentationClassAug/."""

    def __init__(self, root: str, year: str = "2012"):
        super().__init__(root, year, "train")  # torchvision's checks of root and year; then our list
        folder = voc_folder(root, year)
        ids = (folder / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
        self.images = [str(folder / "JPEGImages" / f"{i}.jpg") for i in ids]
        self.targets = [str(folder / "SegmentationClassAug" / f"{i}.png") for i in ids]
        self.image_set = "train_aug"


def voc_folder(root: Path | str, year: str) -> Path:
    """Where torchvision looks for VOC `year` under `root` (VOCdevkit/VOC2012 for 2012)."""
    return Path(root, DATASET_YEAR_DICT[year]["base_dir"])


DOWNLOAD_SIZES = {"2007": ", two archives, trainval and test, 0.9 GB in all", "2012": ", 2 GB"}


def check_listed(listing: Path | str, paths: Iterable[str], root: Path) -> None:
    """Every file a VOC list names exists: else one line naming the list, the id and the missing file."""
    for path in paths:
        if not Path(path).is_file():
            raise DataNotFoundError(f"{listing} names '{Path(path).stem}' but {path} does not exist: fix the list or "
                                    f"the files under data.root={root}")


class VOCLayout(SplitsDataModule):
    """What VOC segmentation and detection share: VOC<year> under data.root, the lists, the download, the advice."""

    task: ClassVar[str] = "segmentation"
    reader: ClassVar[type[datasets.VisionDataset]] = datasets.VOCSegmentation
    lists: ClassVar[str] = "Segmentation"  # the folder of ImageSets that holds the task's lists

    def __init__(self, year: Year, download: bool, train_split: str, val_split: str, test_split: str, **settings: Any):
        super().__init__(**settings)
        self.year, self.download = year, download
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.folder = voc_folder(self.root, year)

    def missing(self, reason: str) -> DataNotFoundError:
        example, offline = ("voc2012", "shapes") if self.task == "segmentation" else ("voc2007", "shapes_detection")
        return DataNotFoundError(
            f"{self.name} not found: looked for {self.folder.resolve()} ({reason}). Either let torchvision download "
            f"VOC {self.year} once on a machine with internet access (data.download=true"
            f"{DOWNLOAD_SIZES.get(self.year, '')}), or copy the extracted 'VOCdevkit' folder to a local directory and "
            f"point data.root at the directory that contains it, e.g. `python -m c3exp task={self.task} "
            f"data={example} data.root=/datasets` (the default is data.root=data, relative to where you run, or "
            f"$C3EXP_DATA). For an offline run without any download, use data={offline}, which writes its own scenes "
            f"in the VOC layout.")

    def list_file(self, split: str) -> Path:
        return self.folder / "ImageSets" / self.lists / f"{split}.txt"

    def prepare_data(self) -> None:
        """Download (data.download=true) the archives of missing lists once, on one process (2007's test: its own)."""
        for split in dict.fromkeys(self.splits.values()) if self.download else ():
            if split != "train_aug" and not self.list_file(split).is_file():  # SBD's list: not torchvision's
                try:
                    self.reader(str(self.root), self.year, split, download=True)
                except (OSError, RuntimeError) as err:  # URLError, DNS, checksum failures
                    raise self.missing(f"the download failed: {err}") from None


class RandomScale:
    """DeepLab's scaling relative to each image (v2.RandomResize's is absolute); then a crop of `fits` must fit."""

    def __init__(self, scale_range: tuple[float, float], fits: int | None = None):
        (self.low, self.high), self.fits = scale_range, fits

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        scale = self.low + (self.high - self.low) * float(torch.rand(()))
        height, width = (max(1, round(side * scale)) for side in image.shape[-2:])
        check(self.fits is None or min(height, width) >= self.fits, "data.crop_size", self.fits,
              f"at most {min(height, width)}, the shorter side of a {width}x{height} training image after random "
              f"scaling, as data.pad_to_crop=false (pad it: data.pad_to_crop=true)")
        return (F.resize(image, [height, width], interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
                F.resize(mask, [height, width], interpolation=v2.InterpolationMode.NEAREST_EXACT))


def pad_collate(batch: Sequence[Sample], ignore_index: int = 255) -> Sample:
    """Stack samples of different sizes: pad each to the batch's largest H and W (images 0, masks ignore_index)."""
    height, width = (max(image.shape[dim] for image, _ in batch) for dim in (-2, -1))

    def pad(x: torch.Tensor, value: int) -> torch.Tensor:  # on the bottom and right: the pixels keep their places
        return torch.nn.functional.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]), value=value)

    images = torch.stack([pad(image, 0) for image, _ in batch])
    return images, torch.stack([pad(mask, ignore_index) for _, mask in batch])


class CheckedSegmentation(Dataset):
    """A VOCSegmentation's samples, checked against the settings (one-line errors naming the file), then transformed."""

    def __init__(self, voc: datasets.VOCSegmentation, transform: v2.Transform, num_classes: int,
                 ignore_index: int, check_masks: bool = True):
        self.voc, self.transform, self.check_masks = voc, transform, check_masks
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.voc)

    def __getitem__(self, index: int) -> Sample:
        image, mask_image = self.voc[index]
        path, labels = self.voc.masks[index], np.array(mask_image)
        if labels.ndim != 2:
            raise DataNotFoundError(f"{path} is a {mask_image.mode} image: a mask must be a palette or greyscale "
                                    f"PNG of class indices (check data.root={self.voc.root})")
        if mask_image.size != image.size:
            raise DataNotFoundError(f"the mask {path} is {'x'.join(map(str, mask_image.size))} (width x height) but "
                                    f"its image {self.voc.images[index]} is {'x'.join(map(str, image.size))}: "
                                    f"every mask must match its image (check data.root={self.voc.root})")
        if self.check_masks:
            present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
            bad = [int(label) for label in present if label >= self.num_classes and label != self.ignore_index]
            check(not bad, "data.num_classes", self.num_classes,
                  f"more than the labels {bad} in {path} (masks hold 0..{self.num_classes - 1} and "
                  f"data.ignore_index={self.ignore_index})")
        return self.transform(image, tv_tensors.Mask(labels))


class VOCSegmentationDataModule(VOCLayout):
    """VOC segmentation under `root`/VOCdevkit/VOC<year>; `train_split: train_aug` is SBD's list."""

    def __init__(
        self,
        num_classes: Annotated[int, at.Interval(ge=1, le=255)],
        crop_size: PositiveInt,
        scale_range: Annotated[tuple[PositiveFloat, PositiveFloat], at.Predicate(lambda r: r[0] <= r[1]),
                               "[low, high], low <= high"],
        hflip: bool, augment: bool, pad_to_crop: bool,
        ignore_index: int,
        mean: tuple[float, float, float],
        std: tuple[PositiveFloat, PositiveFloat, PositiveFloat],
        check_masks: bool,
        **settings: Any,
    ):
        super().__init__(**settings)
        check(num_classes <= ignore_index <= 255, "data.ignore_index", ignore_index,
              f"a label no class uses that fits 8-bit masks: {num_classes}..255 (VOC's void is 255)")
        self.num_classes, self.ignore_index, self.check_masks = num_classes, ignore_index, check_masks
        self.crop_size, self.scale_range = crop_size, tuple(float(s) for s in scale_range)
        self.hflip, self.augment = hflip, augment
        self.pad_to_crop, self.mean, self.std = pad_to_crop, tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.class_names = (list(VOC_CLASSES) if num_classes == len(VOC_CLASSES)
                            else [f"class{i}" for i in range(num_classes)])

    def open_split(self, role: str) -> CheckedSegmentation:
        """torchvision's dataset for the list data.<role>_split, every file it names checked, its samples on use."""
        split, listing = self.splits[role], self.list_file(self.splits[role])
        lists = sorted(p.stem for p in listing.parent.glob("*.txt"))
        if not self.folder.is_dir() or not lists:
            raise self.missing("no such folder" if not self.folder.is_dir() else
                               "it has no ImageSets/Segmentation/*.txt lists")
        check(split in KNOWN_LISTS and split in lists, f"data.{role}_split", split,
              f"a list VOC readers know ({', '.join(KNOWN_LISTS)}) that exists in {listing.parent}; found: "
              f"{', '.join(lists)}")
        try:
            voc = (SBDAugmentedVOC(str(self.root), self.year) if split == "train_aug"
                   else datasets.VOCSegmentation(str(self.root), self.year, split))
        except FileNotFoundError as err:  # train_aug also opens torchvision's train.txt
            raise DataNotFoundError(f"{err.filename} does not exist (needed for data.{role}_split={split!r} "
                                    f"under data.root={self.root})") from None
        check_listed(listing, (*voc.images, *voc.masks), self.root)
        return CheckedSegmentation(voc, self.transform(role == "train"), self.num_classes, self.ignore_index,
                                   self.check_masks)

    def transform(self, train: bool) -> v2.Compose:
        """Training adds scale, pad (the mean colour, 0 once normalised, as `pad_collate` pads), crop and flip."""
        steps: list = [v2.ToImage()]
        if train and self.augment:
            fill = {tv_tensors.Image: [round(255 * m) for m in self.mean], tv_tensors.Mask: self.ignore_index}
            steps += [RandomScale(self.scale_range, None if self.pad_to_crop else self.crop_size),
                      v2.RandomCrop(self.crop_size, pad_if_needed=self.pad_to_crop, fill=fill)]
            steps += [v2.RandomHorizontalFlip()] if self.hflip else []
        dtypes = {tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}
        steps += [v2.ToDtype(dtypes, scale=True), v2.Normalize(list(self.mean), list(self.std)), v2.ToPureTensor()]
        return v2.Compose(steps)

    def collate_fn(self, split: str) -> partial[Sample]:
        return partial(pad_collate, ignore_index=self.ignore_index)
