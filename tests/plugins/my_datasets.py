"""Data of one's own (docs/extending.md): horizontal (label 0) or vertical (label 1) bars, named by conf/data/bars.yaml."""
from __future__ import annotations

import torch

from c3exp.data.base import ImageArrays, ImageDataModule


class Bars(ImageDataModule):
    """`images` white bars on black, each at a random row (label 0) or column (label 1); made on the spot."""

    def __init__(self, images: int, **kwargs):
        super().__init__(**kwargs)
        self.images = images

    def load_arrays(self, train: bool) -> ImageArrays:
        generator = torch.Generator().manual_seed(int(train))
        labels = torch.randint(0, 2, (self.images,), generator=generator)
        places = torch.randint(0, self.image_size, (self.images,), generator=generator)
        pictures = torch.zeros(self.images, 3, self.image_size, self.image_size, dtype=torch.uint8)
        for picture, label, place in zip(pictures, labels, places):
            (picture[:, place] if label == 0 else picture[:, :, place]).fill_(255)
        return ImageArrays(pictures, labels)
