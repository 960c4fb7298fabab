"""Any folder of class subfolders (`<root>/train/<class>/*.jpg`, `<root>/val/<class>/*.jpg`)."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

import torch

from c3exp.data.base import ImageDataModule
from c3exp.errors import DataNotFoundError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageFolderDataModule(ImageDataModule):
    """Files decoded per sample by DataLoader workers; ImageNet-style resize/crop augmentation.

    `num_classes: null` is filled in from the number of class folders under `<root>/train`.
    """

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root: str, train_dir: str = "train", val_dir: str = "val", test_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir or val_dir}
        self.folders: dict[str, datasets.ImageFolder] = {}

    def _folder(self, split: str) -> Path:
        path = self.root / self.dirs[split]
        if not path.is_dir():
            raise DataNotFoundError(
                f"imagefolder: {path.resolve()} does not exist. Point data.root at a directory holding "
                f"'{self.dirs['train']}/' and '{self.dirs['val']}/' folders with one subfolder per class."
            )
        return path

    def setup(self, stage: str | None = None) -> None:
        if not self.folders:
            self.folders = {split: datasets.ImageFolder(str(self._folder(split))) for split in self.dirs}
            if self.num_classes is None:
                self.num_classes = len(self.folders["train"].classes)

    def transform(self, train: bool) -> v2.Transform:
        size = self.image_size
        if train and self.augment:
            steps = [v2.RandomResizedCrop(size, antialias=True)] + ([v2.RandomHorizontalFlip()] if self.hflip else [])
        else:
            steps = [v2.Resize(int(round(size * 8 / 7)), antialias=True), v2.CenterCrop(size)]
        return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))])

    def dataset(self, split: str) -> Dataset:
        self.setup()
        folder = self.folders[split]
        return datasets.ImageFolder(folder.root, transform=self.transform(train=split == "train"))
