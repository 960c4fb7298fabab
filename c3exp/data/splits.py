"""What VOC segmentation, VOC and COCO detection share: splits opened once by role, batched by their `collate_fn`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from c3exp.data.base import BatchedDataModule

ROLES = ("train", "val", "test")
ROLES_OF_STAGE = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class SplitsDataModule(BatchedDataModule):
    """`seed`: kept for the config; augmentation draws from the global RNG, reseeded every epoch."""

    def __init__(self, name: str, root: str, seed: int = 0, **loading: Any) -> None:
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
        for role in ROLES_OF_STAGE.get(stage, ROLES):
            self.dataset(role)
