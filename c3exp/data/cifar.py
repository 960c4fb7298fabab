"""CIFAR-10/100 through torchvision's own download, checksum and parsing code."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torchvision import datasets

from c3exp.data.base import ImageArrays, ImageDataModule
from c3exp.errors import DataNotFoundError, check

_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_TORCHVISION_CLASS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


def _unverified(cls: type[datasets.CIFAR10]) -> type[datasets.CIFAR10]:
    """The same torchvision class with the md5 checks reduced to "the files exist".

    For local copies in the CIFAR on-disk format that are not the official files (subsets, test
    fixtures). Everything else (file layout, pickle parsing, label keys) is torchvision's.
    """

    class Unverified(cls):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            folder = Path(self.root, self.base_folder)
            names = [name for name, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all((folder / name).is_file() for name in names)

        def _load_meta(self) -> None:
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    Unverified.__name__ = f"Unverified{cls.__name__}"
    return Unverified


def missing_data_message(name: str, root: Path, reason: str) -> str:
    folder = _TORCHVISION_CLASS[name].base_folder
    return (
        f"{name} not found: looked for {root.resolve() / folder} ({reason}). "
        f"Either let c3exp download it once on a machine with internet access (data.download=true), "
        f"or copy the python-version archive's extracted '{folder}' folder to a local directory and "
        f"point data.root at the directory that contains it, e.g. `python -m c3exp data={name} "
        f"data.root=/path/to/datasets` (the default is data.root=data, relative to where you run, "
        f"or $C3EXP_DATA). For the offline demo without any download, use data=digits."
    )


class CIFARDataModule(ImageDataModule):
    """CIFAR-10 or CIFAR-100 (chosen by `name`), held in memory as uint8 arrays."""

    def __init__(self, root: str = "data", download: bool = True, verify_checksums: bool = True, **kwargs):
        check(kwargs.get("name") in _TORCHVISION_CLASS, "data.name", kwargs.get("name"), sorted(_TORCHVISION_CLASS))
        super().__init__(**kwargs)
        self.root, self.download, self.verify_checksums = Path(root).expanduser(), download, verify_checksums
        self.mean, self.std = _STATS[self.name]

    def prepare_data(self) -> None:
        self._open(train=True)
        self._open(train=False)

    def _open(self, train: bool) -> datasets.CIFAR10:
        cls = _TORCHVISION_CLASS[self.name]
        if not self.verify_checksums:
            cls = _unverified(cls)
        try:
            return cls(str(self.root), train=train, download=self.download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DataNotFoundError(missing_data_message(self.name, self.root, str(err).split(".")[0])) from None
        except OSError as err:  # URLError, socket and DNS failures while downloading
            raise DataNotFoundError(
                missing_data_message(self.name, self.root, f"the download failed: {err}")
            ) from None

    def load_arrays(self, train: bool) -> ImageArrays:
        dataset = self._open(train)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return ImageArrays(images, torch.as_tensor(dataset.targets, dtype=torch.long))
