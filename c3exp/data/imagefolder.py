"""Any folder of class subfolders (`<root>/train/<class>/*.jpg`, `<root>/val/<class>/*.jpg`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.transforms import v2

from c3exp.data.base import ImageDataModule
from c3exp.errors import DataNotFoundError, check

_EXPECTED = (f"one sub-folder per class, each holding images ending in {', '.join(IMG_EXTENSIONS)} (what "
             f"torchvision's ImageFolder reads)")


def open_image_folder(path: Path) -> datasets.ImageFolder:
    """torchvision's ImageFolder, with an empty split or class folder reported as one line instead of a traceback."""
    try:
        folder = datasets.ImageFolder(str(path), allow_empty=True)
    except FileNotFoundError:  # no class folders: images straight in the split folder are the usual slip
        loose = any(entry.is_file() and has_file_allowed_extension(entry.name, IMG_EXTENSIONS)
                    for entry in os.scandir(path))
        hint = " (its images lie directly in it: move them into one sub-folder per class)" if loose else ""
        raise DataNotFoundError(f"imagefolder: {path.resolve()} has no class sub-folders{hint}: expected "
                                f"{_EXPECTED}.") from None
    found = set(folder.targets)
    empty = [name for label, name in enumerate(folder.classes) if label not in found]
    if empty:
        shown = ", ".join(map(repr, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DataNotFoundError(f"imagefolder: {path.resolve()} has class folders without images ({shown}): expected "
                                f"{_EXPECTED}; add images to them or remove them.")
    return folder


class ImageFolderDataModule(ImageDataModule):
    """Files decoded per sample by DataLoader workers; `num_classes: null` counts the folders of `<root>/train`."""

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's

    def __init__(self, root: str, train_dir: str, val_dir: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.dirs = {"train": train_dir, "val": val_dir, "test": val_dir}  # tested on the validation folder
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
            self.folders = {split: open_image_folder(self._folder(split)) for split in self.dirs}
            classes = self.folders["train"].classes  # one: nothing to tell apart (cross-entropy of one logit is 0)
            check(len(classes) >= 2, "data.root", str(self.root),
                  f"a folder whose {self.dirs['train']}/ has 2 or more class sub-folders: it has one, {classes[0]!r}")
            if self.num_classes is None:
                self.num_classes = len(classes)

    def transform(self, train: bool) -> v2.Transform:
        size = self.image_size
        if train and self.augment:
            steps = [v2.RandomResizedCrop(size, antialias=True)] + ([v2.RandomHorizontalFlip()] if self.hflip else [])
        else:
            steps = [v2.Resize(int(round(size * 8 / 7)), antialias=True), v2.CenterCrop(size)]
        normalize = v2.Normalize(list(self.mean), list(self.std))
        return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True), normalize])

    def dataset(self, split: str) -> Dataset:
        self.setup()
        return datasets.ImageFolder(self.folders[split].root, transform=self.sample_transform(split == "train"))
