"""CIFAR-10/100 through torchvision's own download, checksum and parsing code."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from c3exp.data.base import ImageArrays, ImageDataModule
from c3exp.errors import DataNotFoundError, check

_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_TORCHVISION_CLASS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
_PIXELS = 3 * 32 * 32  # one image per row of a batch's "data" array


# What a python-version CIFAR file may name: numpy's array reconstruction (numpy 1 and 2 module names) and the
# bytes codec of pickle protocol 2. Anything else (os.system, a class with __reduce__) is refused, never imported.
_ARRAY_GLOBALS = {
    *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only: files from elsewhere are data, never code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR file holds")


def load_pickle(path: str | Path) -> object:
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="latin1").load()


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
            self.classes = load_pickle(os.path.join(self.root, self.base_folder, self.meta["filename"]))[self.meta["key"]]
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


def _batch_names(cls: type[datasets.CIFAR10]) -> list[str]:
    return [name for name, _ in cls.train_list + cls.test_list]


def _file_names(cls: type[datasets.CIFAR10]) -> list[str]:
    """Every file torchvision reads: the train and test batches and the class-name file."""
    return _batch_names(cls) + [cls.meta["filename"]]


def _official_md5(cls: type[datasets.CIFAR10]) -> dict[str, str]:
    return {**dict(cls.train_list + cls.test_list), cls.meta["filename"]: cls.meta["md5"]}


def _entry_problem(entry: object, keys: list[tuple[str, ...]]) -> str | None:
    """Why an unpickled object is not what torchvision reads: a dict with one of each tuple of `keys`."""
    if not isinstance(entry, dict):
        return f"is not a python-version CIFAR file: it holds a {type(entry).__name__}, not a dict"
    for choices in keys:
        if not any(key in entry for key in choices):
            return f"is not a python-version CIFAR file: it has no {' or '.join(map(repr, choices))} entry"
    data = entry.get("data")
    if ("data",) in keys and (getattr(data, "ndim", None) != 2 or data.shape[1] != _PIXELS):
        return f"is not a python-version CIFAR file: its 'data' is not an array of rows of {_PIXELS} bytes"
    return None


def _file_problem(path: Path, keys: list[tuple[str, ...]]) -> str | None:
    """Why torchvision's parsing of `path` fails (truncated, corrupt, not CIFAR), or None if it would not."""
    try:
        entry = load_pickle(path)
    except Exception as err:  # damaged pickles raise many types: EOFError, UnpicklingError, ValueError, ...
        detail = " ".join(str(err).split())  # one line, whatever the unpickler said
        return f"is truncated or corrupt: unpickling fails with {type(err).__name__}: {detail}"
    return _entry_problem(entry, keys)


def _unreadable(cls: type[datasets.CIFAR10], folder: Path) -> dict[str, str]:
    """The files in `folder` that torchvision could not parse, with why."""
    batch_keys = [("data",), ("labels", "fine_labels")]  # torchvision reads either label key
    keys = {name: batch_keys for name in _batch_names(cls)} | {cls.meta["filename"]: [(cls.meta["key"],)]}
    problems = {name: _file_problem(folder / name, entry_keys) for name, entry_keys in keys.items()}
    return {name: problem for name, problem in problems.items() if problem}


def _failing_checksums(cls: type[datasets.CIFAR10], folder: Path) -> list[str]:
    """The files in `folder` whose md5 differs from torchvision's record of the official archive."""
    return [name for name, md5 in _official_md5(cls).items() if not check_integrity(str(folder / name), md5)]


def _download_note(download_error: OSError | None) -> str:
    return f" (data.download=true could not fetch a fresh copy: {download_error})" if download_error else ""


def unreadable_message(name: str, folder: Path, problems: dict[str, str], download_error: OSError | None = None) -> str:
    first, problem = next(iter(problems.items()))
    others = f" (also unreadable: {', '.join(list(problems)[1:])})" if len(problems) > 1 else ""
    archive = _TORCHVISION_CLASS[name].filename
    return (
        f"{name}: {folder / first} {problem}{others}{_download_note(download_error)}. Expected the python-version "
        f"files as extracted from {archive}: replace the damaged files with a fresh copy, or delete {folder} "
        f"and run once with data.download=true."
    )


def checksum_message(name: str, folder: Path, failing: list[str], download_error: OSError | None = None) -> str:
    archive = _TORCHVISION_CLASS[name].filename
    return (
        f"{name}: the files in {folder} fail torchvision's md5 checksum ({', '.join(failing)}), so they are not "
        f"the official {archive} files{_download_note(download_error)}. For the official dataset, replace them with "
        f"a fresh copy (or delete {folder} and run once with data.download=true) or point data.root at a directory "
        f"holding one; for a deliberately modified copy in the same format, set data.verify_checksums=false."
    )


def file_problem_message(
    name: str, root: Path, verify_checksums: bool, reason: str, download_error: OSError | None = None
) -> str | None:
    """The one-line error for CIFAR files that are there but unusable, or None if none are there or all look fine.

    torchvision reports missing, truncated and unofficial files alike as "not found or corrupted" (or
    lets a pickle error escape), which sends people looking for a dataset they already have.
    """
    cls = _TORCHVISION_CLASS[name]
    folder = root.resolve() / cls.base_folder
    missing = [file for file in _file_names(cls) if not (folder / file).is_file()]
    if len(missing) == len(_file_names(cls)):
        return None
    if missing:
        return missing_data_message(name, root, f"{reason + '; ' if reason else ''}it lacks {', '.join(missing)}")
    unreadable = _unreadable(cls, folder)
    if unreadable:
        return unreadable_message(name, folder, unreadable, download_error)
    failing = _failing_checksums(cls, folder) if verify_checksums else []
    return checksum_message(name, folder, failing, download_error) if failing else None


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
            self._refuse_unsafe_files(cls)
            cls = _unverified(cls)
        try:
            return cls(str(self.root), train=train, download=self.download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            reason = str(err).split(".")[0]
            raise DataNotFoundError(self._diagnosis(reason) or missing_data_message(self.name, self.root, reason)) from None
        except OSError as err:  # URLError, socket and DNS failures while downloading
            reason = f"the download failed: {err}"
            message = self._diagnosis(reason, download_error=err)
            raise DataNotFoundError(message or missing_data_message(self.name, self.root, reason)) from None
        except Exception:  # pickle and numpy errors from files torchvision found but could not parse
            message = self._diagnosis("")
            if message is None:
                raise
            raise DataNotFoundError(message) from None

    def _refuse_unsafe_files(self, cls: type[datasets.CIFAR10]) -> None:
        """Files that are not the official ones are opened by the array-only unpickler before torchvision's
        pickle.load reads them: one that names anything but arrays is refused, and nothing in it runs."""
        folder = self.root.resolve() / cls.base_folder
        if all((folder / name).is_file() for name in _file_names(cls)):
            problems = _unreadable(cls, folder)
            if problems:
                raise DataNotFoundError(unreadable_message(self.name, folder, problems))

    def _diagnosis(self, reason: str, download_error: OSError | None = None) -> str | None:
        """What is wrong with the CIFAR files on disk, or None when they look fine (the cause lies elsewhere)."""
        return file_problem_message(self.name, self.root, self.verify_checksums, reason, download_error)

    def load_arrays(self, train: bool) -> ImageArrays:
        dataset = self._open(train)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return ImageArrays(images, torch.as_tensor(dataset.targets, dtype=torch.long))
