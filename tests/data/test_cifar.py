"""Data: CIFAR through torchvision's real code path on files written here, the digits, the errors."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

import c3exp

from c3exp.data import CIFARDataModule, DigitsDataModule, SyntheticDataModule
from c3exp.errors import DataNotFoundError
from tests.conftest import write_cifar


def cifar(root: Path, name: str = "cifar10", **kwargs) -> CIFARDataModule:
    kwargs = {"batch_size": 8, "num_workers": 0, "download": False, "verify_checksums": False, **kwargs}
    return CIFARDataModule(root=str(root), name=name, num_classes=10 if name == "cifar10" else 100, **kwargs)


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_files_round_trip_through_torchvision(tmp_path, variant):
    written = write_cifar(tmp_path, variant, per_file=12)
    datamodule = cifar(tmp_path, variant)
    datamodule.setup()
    train, test = datamodule.splits["train"], datamodule.splits["test"]
    assert len(train) == 60 and len(test) == 12
    first_file = "data_batch_1" if variant == "cifar10" else "train"
    expected = torch.from_numpy(written[first_file][0].reshape(3, 32, 32))
    assert torch.equal(train.images[0], expected)
    assert train.labels[0].item() == written[first_file + ":labels"][0]
    assert datamodule.splits["val"] is test  # val_split=0: the paper's protocol


def test_cifar_batches_are_augmented_and_normalised(cifar10_root):
    datamodule = cifar(cifar10_root, val_split=20)
    datamodule.setup()
    assert len(datamodule.splits["train"]) == 80 and len(datamodule.splits["val"]) == 20
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.long
    assert -2.5 < images.mean().item() < 2.5
    val_images, _ = next(iter(datamodule.val_dataloader()))
    raw = datamodule.splits["val"].images[:8].float() / 255
    mean, std = torch.tensor(datamodule.mean).view(3, 1, 1), torch.tensor(datamodule.std).view(3, 1, 1)
    torch.testing.assert_close(val_images, (raw - mean) / std)  # no augmentation at evaluation


def test_official_checksums_reject_files_that_are_not_the_official_ones(cifar10_root):
    with pytest.raises(DataNotFoundError, match="data.root"):
        cifar(cifar10_root, verify_checksums=True).setup()


def test_missing_cifar_names_the_place_and_the_setting(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        cifar(tmp_path / "nowhere").setup()
    message = str(err.value)
    assert "cifar-10-batches-py" in message and str((tmp_path / "nowhere").resolve()) in message
    assert "data.root" in message and "\n" not in message


def test_offline_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.CIFAR100, "download", offline)
    with pytest.raises(DataNotFoundError, match="download failed.*data.root"):
        cifar(tmp_path, "cifar100", download=True, verify_checksums=True).setup()


def test_digits_are_real_images_with_a_fixed_split():
    first = DigitsDataModule(name="digits", num_classes=10, num_workers=0, val_split=180)
    second = DigitsDataModule(name="digits", num_classes=10, num_workers=0, val_split=180)
    first.setup()
    second.setup()
    sizes = {split: len(arrays) for split, arrays in first.splits.items()}
    assert sizes == {"train": 1797 - 359 - 180, "val": 180, "test": 359}
    for split in first.splits:
        assert torch.equal(first.splits[split].labels, second.splits[split].labels)
        assert torch.equal(first.splits[split].images, second.splits[split].images)
    _, train_index, test_index = first._partition()
    assert len(set(train_index.tolist()) | set(test_index.tolist())) == 1797
    assert not set(train_index.tolist()) & set(test_index.tolist())
    images = first.splits["train"].images
    assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.uint8
    assert images.float().std() > 50  # real strokes on a dark background, not a constant
    assert set(first.splits["test"].labels.tolist()) == set(range(10))


def test_synthetic_is_deterministic_and_cifar_shaped():
    datamodule = SyntheticDataModule(name="synthetic", num_classes=100, num_train=64, num_test=16, num_workers=0)
    datamodule.setup()
    again = SyntheticDataModule(name="synthetic", num_classes=100, num_train=64, num_test=16, num_workers=0)
    again.setup()
    assert datamodule.splits["train"].images.shape == (64, 3, 32, 32)
    assert torch.equal(datamodule.splits["train"].images, again.splits["train"].images)
    assert np.all(datamodule.splits["test"].labels.numpy() < 100)


def write_image_folder(root: Path, classes: int = 2, per_class: int = 4, size: int = 40) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_imagefolder_counts_classes_and_trains_a_torchvision_resnet(tmp_path):
    from c3exp.train import train
    from tests.conftest import run_config

    root = write_image_folder(tmp_path / "images", classes=3)
    overrides = ["data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
                 "model=resnet18", "attn=se", "trainer=cpu", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    results = train(run_config(overrides, tmp_path / "run"))
    assert results["epochs"] == 1 and results["data"] == "imagefolder"
    three_classes = c3exp.build_model(c3exp.compose([*overrides, "data.num_classes=3"]))
    assert results["params"] == sum(p.numel() for p in three_classes.parameters())


def test_imagefolder_missing_root_names_the_setting(tmp_path):
    from c3exp.data import ImageFolderDataModule

    with pytest.raises(DataNotFoundError, match="data.root"):
        ImageFolderDataModule(root=str(tmp_path / "none"), name="imagefolder", num_classes=None).setup()


def test_digits_normalisation_constants_are_the_data_statistics():
    """Normalised digits have zero mean and unit spread over the images training may see."""
    data = DigitsDataModule(name="digits", num_classes=10, num_workers=0, val_split=180)
    everything, train_index, _ = data._partition()
    pixels = everything.subset(train_index).images.float() / 255
    assert data.mean == pytest.approx((pixels.mean().item(),) * 3, abs=5e-4)
    assert data.std == pytest.approx((pixels.std().item(),) * 3, abs=5e-4)
