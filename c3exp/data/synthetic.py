"""Random CIFAR-shaped images and labels, for speed work and smoke tests (nothing to learn)."""
from __future__ import annotations

import torch

from c3exp.data.base import ImageArrays, ImageDataModule


class SyntheticDataModule(ImageDataModule):
    def __init__(self, num_train: int, num_test: int, **kwargs):
        super().__init__(**kwargs)
        self.num_train, self.num_test = num_train, num_test

    def load_arrays(self, train: bool) -> ImageArrays:
        count = self.num_train if train else self.num_test
        generator = torch.Generator().manual_seed(int(train))
        shape = (count, self.channels, self.image_size, self.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, self.num_classes, (count,), generator=generator)
        return ImageArrays(images, labels)
