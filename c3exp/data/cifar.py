"""CIFAR-10/100: torchvision downloads and checks the archive; c3exp reads the python-version files itself, with an
unpickler of arrays only, so a file from elsewhere is data, never code, and a bad one is one line saying why."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from c3exp.data.base import ImageArrays, ImageDataModule
from c3exp.errors import DataNotFoundError

_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
          "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
_TORCHVISION_CLASS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
_PIXELS = 3 * 32 * 32  # one image per row of a batch's "data" array
_LABELS = ("labels", "fine_labels")  # CIFAR-10's and CIFAR-100's label key, as torchvision reads them

# What a CIFAR pickle may name: numpy's array reconstruction (numpy 1 and 2) and pickle 2's bytes codec; no more.
_ARRAY_GLOBALS = {*((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                    for name in ("_reconstruct", "scalar")), ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only: files from elsewhere are data, never code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR file holds")


def _read(path: Path, keys: list[tuple[str, ...]]) -> tuple[dict, str | None]:
    """The file's dict (with one of each tuple of `keys`, 'data' rows of 3072 bytes), or why it cannot be read."""
    try:
        with open(path, "rb") as file:
            entry = _ArrayUnpickler(file, encoding="latin1").load()
    except Exception as err:  # damaged pickles raise many types: EOFError, UnpicklingError, ValueError, ...
        detail = " ".join(str(err).split())  # one line, whatever the unpickler said
        return {}, f"is truncated or corrupt: unpickling fails with {type(err).__name__}: {detail}"
    if not isinstance(entry, dict):
        return {}, f"is not a python-version CIFAR file: it holds a {type(entry).__name__}, not a dict"
    absent, data = [choices for choices in keys if not any(key in entry for key in choices)], entry.get("data")
    if absent:
        problem = f"it has no {' or '.join(map(repr, absent[0]))} entry"
    elif ("data",) in keys and (getattr(data, "ndim", None) != 2 or data.shape[1] != _PIXELS):
        problem = f"its 'data' is not an array of rows of {_PIXELS} bytes"
    else:
        return entry, None
    return {}, f"is not a python-version CIFAR file: {problem}"


class CIFARDataModule(ImageDataModule):
    """CIFAR-10 or CIFAR-100 (chosen by `name`), held in memory as uint8 arrays."""

    def __init__(self, name: Literal["cifar10", "cifar100"], root: str, download: bool, verify_checksums: bool,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.root, self.download, self.verify_checksums = Path(root).expanduser(), download, verify_checksums
        self.mean, self.std = _STATS[self.name]
        self.source = _TORCHVISION_CLASS[self.name]
        self.folder = self.root.resolve() / self.source.base_folder
        meta = self.source.meta
        self.md5 = {**dict(self.source.train_list + self.source.test_list), meta["filename"]: meta["md5"]}

    def missing(self, reason: str) -> str:
        return (
            f"{self.name} not found: looked for {self.folder} ({reason}). "
            f"Either let c3exp download it once on a machine with internet access (data.download=true), "
            f"or copy the python-version archive's extracted '{self.source.base_folder}' folder to a local directory "
            f"and point data.root at the directory that contains it, e.g. `python -m c3exp data={self.name} "
            f"data.root=/path/to/datasets` (the default is data.root=data, relative to where you run, "
            f"or $C3EXP_DATA). For the offline demo without any download, use data=digits."
        )

    def prepare_data(self) -> None:
        self.load_arrays(train=True)
        self.load_arrays(train=False)

    def load_arrays(self, train: bool) -> ImageArrays:
        """The split's batches, downloaded first (data.download=true) where the files on disk cannot be used."""
        batches = [name for name, _ in (self.source.train_list if train else self.source.test_list)]
        entries, problem = self._read(batches)
        if problem and self.download:
            try:
                self.source(str(self.root), train=train, download=True)
            except (OSError, RuntimeError) as err:  # URLError, DNS, the archive's own checks
                problem = self._read(batches, err)[1] or self.missing(str(err))
                raise DataNotFoundError(problem) from None
            entries, problem = self._read(batches)
        if problem:
            raise DataNotFoundError(problem)
        data = np.concatenate([entries[name]["data"] for name in batches]).reshape(-1, 3, 32, 32)
        labels = [label for name in batches
                  for label in next(entries[name][key] for key in _LABELS if key in entries[name])]
        return ImageArrays(torch.from_numpy(data), torch.as_tensor(labels, dtype=torch.long))

    def _read(self, batches: list[str], download_error: Exception | None = None) -> tuple[dict[str, dict], str | None]:
        """The batches' dicts, or the one line saying why the files cannot be used: missing, unreadable, unofficial."""
        missing = [name for name in self.md5 if not (self.folder / name).is_file()]
        if missing:
            reason = f"the download failed: {download_error}" if download_error else (
                f"it lacks {', '.join(missing)}" if self.folder.is_dir() else "no such folder")
            return {}, self.missing(reason)
        meta = self.source.meta
        keys = {name: [("data",), _LABELS] for name in batches} | {meta["filename"]: [(meta["key"],)]}
        read = {name: _read(self.folder / name, entry_keys) for name, entry_keys in keys.items()}
        problems = {name: problem for name, (_, problem) in read.items() if problem}
        note = f" (data.download=true could not fetch a fresh copy: {download_error})" if download_error else ""
        if problems:
            (first, problem), *others = problems.items()
            also = f" (also unreadable: {', '.join(name for name, _ in others)})" if others else ""
            return {}, (f"{self.name}: {self.folder / first} {problem}{also}{note}. Expected the python-version files "
                        f"as extracted from {self.source.filename}: replace the damaged files with a fresh copy, or "
                        f"delete {self.folder} and run once with data.download=true.")
        failing = [name for name, md5 in self.md5.items() if self.verify_checksums and not check_integrity(
            str(self.folder / name), md5)]
        if failing:
            return {}, (f"{self.name}: the files in {self.folder} fail torchvision's md5 checksum ({', '.join(failing)}"
                        f"), so they are not the official {self.source.filename} files{note}. For the official "
                        f"dataset, replace them with a fresh copy (or delete {self.folder} and run once with "
                        f"data.download=true) or point data.root at a directory holding one; for a deliberately "
                        f"modified copy in the same format, set data.verify_checksums=false.")
        return {name: entry for name, (entry, _) in read.items()}, None
