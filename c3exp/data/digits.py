"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, no download needed."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from c3exp.data.base import ImageArrays, ImageDataModule


def load_digits_32(image_size: int = 32) -> ImageArrays:
    """All 1,797 digits upsampled (bilinear) to image_size x image_size x 3, as uint8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    large = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (large.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return ImageArrays(images, torch.as_tensor(bunch.target, dtype=torch.long))


class DigitsDataModule(ImageDataModule):
    """A fixed, seeded split of the digits (`test_fraction` of them the test split)."""

    # Pixel statistics of the 1,438 non-test images after upsampling to 32x32 (load_digits_32 / 255).
    mean = (0.306, 0.306, 0.306)
    std = (0.324, 0.324, 0.324)

    def __init__(self, test_fraction: float, **kwargs):
        super().__init__(**kwargs)
        self.test_fraction = test_fraction

    def _partition(self) -> tuple[ImageArrays, torch.Tensor, torch.Tensor]:
        everything = load_digits_32(self.image_size)
        order = torch.randperm(len(everything), generator=torch.Generator().manual_seed(1))
        n_test = int(round(self.test_fraction * len(order)))
        return everything, order[n_test:], order[:n_test]

    def load_arrays(self, train: bool) -> ImageArrays:
        everything, train_index, test_index = self._partition()
        return everything.subset(train_index if train else test_index)
