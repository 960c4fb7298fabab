"""What the data modules of files on disk share (VOC segmentation, VOC and COCO detection): each split is opened
once, by the role it plays, and batched by the module's own `collate` (samples differ in size)."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from c3exp.data.base import ImageDataModule
from c3exp.schema import NonNegativeInt, PositiveInt

ROLES = ("train", "val", "test")
ROLES_OF_STAGE = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class SplitsDataModule(L.LightningDataModule):
    """Splits by role, per-process batches and loaders; subclasses write `open_split` and `collate`."""

    def __init__(self, batch_size: PositiveInt = 8, eval_batch_size: PositiveInt | None = None,
                 num_workers: NonNegativeInt = 2) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size or batch_size, num_workers
        self.datasets: dict[str, Dataset] = {}

    def open_split(self, role: str) -> Dataset:
        """The checked, transformed samples of the split that plays `role`."""
        raise NotImplementedError

    def collate(self, samples: list[Any]) -> Any:
        raise NotImplementedError

    def dataset(self, role: str) -> Dataset:
        if role not in self.datasets:
            self.datasets[role] = self.open_split(role)
        return self.datasets[role]

    def setup(self, stage: str | None = None) -> None:
        for role in ROLES_OF_STAGE.get(stage, ROLES):
            self.dataset(role)

    per_process_batch_size = ImageDataModule.per_process_batch_size

    def _loader(self, role: str) -> DataLoader:
        return DataLoader(
            self.dataset(role),
            batch_size=self.per_process_batch_size(role),
            shuffle=role == "train",
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,  # workers seeded afresh from the per-epoch reseeded RNG: exact resume
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
