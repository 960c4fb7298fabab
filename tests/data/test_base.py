"""The shared classification DataModule (c3exp/data/base.py): the strong-recipe options (MixUp, CutMix, random
erasing) in both data paths, off by default, checked up front, and exact under the per-epoch reseeding."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torchvision.transforms import v2

import c3exp
from c3exp.config import check_command_line, group_choices, instantiate_checked
from c3exp.data import ArrayDataset, ImageDataModule, SyntheticDataModule
from c3exp.data.device import DeviceBatches, RandomCropFlip
from c3exp.errors import ConfigError
from c3exp.saved_config import rebuild_config
from c3exp.schema import check_settings
from c3exp.training.callbacks import EpochSeed
from tests.conftest import assert_names_bad_setting
from tests.data import data_module

RECIPE_KEYS = ("mixup_alpha", "cutmix_alpha", "random_erasing")
CLASSES, BATCH = 10, 16


def synthetic(**kwargs) -> SyntheticDataModule:
    """96 training and 32 test images of 10 classes: 6 training batches of 16."""
    return data_module("synthetic", **{"num_classes": CLASSES, "num_train": 96, "num_test": 32, "batch_size": BATCH,
                                       **kwargs})


@pytest.mark.parametrize(
    "key,value",
    [
        ("mixup_alpha", -0.1),
        ("cutmix_alpha", float("nan")),
        ("cutmix_alpha", True),
        ("random_erasing", 1.5),
        ("random_erasing", -0.25),
        ("random_erasing", "0.5"),
    ],
)
def test_bad_recipe_values_are_one_line(key, value):
    with pytest.raises(ConfigError) as error:
        check_settings({key: value}, SyntheticDataModule, "data.")
    assert_names_bad_setting(str(error.value), f"data.{key}", value)


def test_the_recipe_keys_are_in_every_image_data_config_and_off():
    """Listed in every image data config (through conf/data/base/image.yaml) so that `data.mixup_alpha=0.2` is a
    known key; the YAML is their only default and says off."""
    image_data = []
    for choice in group_choices("data"):
        data = c3exp.compose([f"data={choice}"]).data
        if issubclass(get_class(data._target_), ImageDataModule):
            image_data.append(choice)
            assert {key: data[key] for key in RECIPE_KEYS} == dict.fromkeys(RECIPE_KEYS, 0.0)
    assert sorted(image_data) == ["cifar10", "cifar100", "digits", "imagefolder", "imagenet", "synthetic"]
    check_command_line(["data=cifar10", "data.mixup_alpha=0.2", "data.cutmix_alpha=1.0", "data.random_erasing=0.25"])


def test_a_stored_data_config_without_the_recipe_keys_gets_the_yamls_values():
    """Checkpoints saved before the keys existed rebuild (saved_config) with conf/data/base/image.yaml's values."""
    old = OmegaConf.to_container(c3exp.compose(["data=digits"]).data, resolve=True)
    for key in (*RECIPE_KEYS, "eval_batch_size"):
        del old[key]
    cfg = rebuild_config({"c3exp": {"config": {"data": old}, "choices": {"data": "digits"}}}, "old.ckpt")
    datamodule = instantiate_checked(cfg.data, "data")
    assert (datamodule.mixup_alpha, datamodule.cutmix_alpha, datamodule.random_erasing) == (0.0, 0.0, 0.0)
    assert datamodule.eval_batch_size == datamodule.batch_size == 32 and datamodule.batch_mixing() is None


def test_off_the_loader_batches_are_the_plain_recipes_bit_for_bit():
    """Defaults add nothing: the same batches as ArrayDataset + the CIFAR recipe + default collate."""
    datamodule = synthetic()
    torch.manual_seed(5)
    got = list(datamodule.train_dataloader())
    torch.manual_seed(5)
    recipe = v2.Compose([RandomCropFlip(4, True), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize(list(datamodule.mean), list(datamodule.std))])
    plain = ArrayDataset(datamodule.splits["train"], recipe)
    expected = list(DataLoader(plain, batch_size=BATCH, shuffle=True))
    assert len(got) == len(expected) == 6
    for (images, labels), (expected_images, expected_labels) in zip(got, expected):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels) and labels.dtype == torch.long


def test_off_the_device_batches_are_the_plain_recipes_bit_for_bit():
    datamodule = synthetic(on_device=True, seed=3)
    loader = datamodule.train_dataloader()
    assert (loader.padding, loader.hflip, loader.erasing) == (4, True, 0.0)
    got = list(loader)
    train = datamodule.splits["train"]
    expected = list(DeviceBatches(train.images, train.labels, BATCH, datamodule.mean, datamodule.std,
                                  padding=4, hflip=True, shuffle=True, seed=3))
    for (images, labels), (expected_images, expected_labels) in zip(got, expected, strict=True):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels) and labels.ndim == 1


@pytest.mark.parametrize("on_device", [False, True])
def test_mixed_training_labels_are_probabilities_and_evaluation_batches_are_untouched(on_device):
    plain = synthetic(on_device=on_device)
    recipe = synthetic(on_device=on_device, mixup_alpha=0.4, cutmix_alpha=1.0, random_erasing=0.5)
    torch.manual_seed(0)
    images, labels = next(iter(recipe.train_dataloader()))
    assert images.shape == (BATCH, 3, 32, 32) and labels.shape == (BATCH, CLASSES) and labels.dtype == torch.float32
    assert torch.allclose(labels.sum(1), torch.ones(BATCH)) and (labels.max(1).values < 1).any()
    for split in ("val", "test"):
        for (got, got_labels), (expected, expected_labels) in zip(getattr(recipe, f"{split}_dataloader")(),
                                                                  getattr(plain, f"{split}_dataloader")(), strict=True):
            assert torch.equal(got, expected) and torch.equal(got_labels, expected_labels) and got_labels.dtype == torch.long


@pytest.mark.parametrize("on_device", [False, True])
def test_erasing_alone_keeps_integer_labels_and_works_without_crop_and_flip(on_device):
    datamodule = synthetic(on_device=on_device, augment=False, random_erasing=1.0)
    device = datamodule.device_batches("train")
    assert (device.padding, device.hflip, device.erasing) == (0, False, 1.0)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert labels.dtype == torch.long and labels.ndim == 1
    # synthetic pixels normalise to (k/255 - 0.5) / 0.25, never 0: zeros are erased pixels, in (nearly) every image
    assert (images == 0).flatten(1).any(1).float().mean() > 0.9
    plain = synthetic(augment=False).device_batches("train")
    assert (plain.padding, plain.hflip, plain.erasing) == (0, False, 0.0)


class Fit:
    """The training batches a fit sees: one train_dataloader(), iterated once per epoch after EpochSeed reseeds."""

    def __init__(self, datamodule: ImageDataModule):
        self.loader, self.reseed, self.epoch = datamodule.train_dataloader(), EpochSeed(seed=7), 0
        if isinstance(self.loader, DeviceBatches):
            self.loader.epoch = lambda: self.epoch  # the trainer's current_epoch

    def batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch = epoch
        self.reseed.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), None)
        return list(self.loader)


OPTIONS = {
    "mixup": dict(mixup_alpha=0.4),
    "cutmix": dict(cutmix_alpha=1.0),
    "mixup_or_cutmix": dict(mixup_alpha=0.4, cutmix_alpha=1.0),
    "erasing": dict(random_erasing=0.5),
}
RESUME_CASES = [(name, path) for name in OPTIONS for path in ("loader", "on_device")] + [("all", "workers")]


@pytest.mark.parametrize("option,path", RESUME_CASES)
def test_an_epochs_batches_do_not_depend_on_earlier_epochs(monkeypatch, option, path):
    """What makes resumed runs exact at the data level: epoch 2 reseeded alone equals epoch 2 after epochs 0 and 1."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # EpochSeed exports these; restored after the test
    monkeypatch.setenv("PL_SEED_WORKERS", "0")
    settings = OPTIONS.get(option) or {key: value for options in OPTIONS.values() for key, value in options.items()}
    settings = {**settings, "on_device": path == "on_device", "num_workers": int(path == "workers")}
    straight = Fit(synthetic(**settings))
    epochs = [straight.batches(epoch) for epoch in range(3)]
    resumed = Fit(synthetic(**settings)).batches(2)
    assert len(resumed) == len(epochs[2]) == 6
    for (images, labels), (expected_images, expected_labels) in zip(resumed, epochs[2]):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert not torch.equal(epochs[1][0][0], epochs[2][0][0])  # epochs differ: the comparison above is not trivial
    mixed = settings.get("mixup_alpha", 0) > 0 or settings.get("cutmix_alpha", 0) > 0
    assert all(labels.ndim == (2 if mixed else 1) for _, labels in resumed)
    if "random_erasing" in settings:
        assert any((images == 0).any() for images, _ in resumed)


def test_image_folders_get_the_options_after_their_own_transforms(tmp_path):
    """ImageFolderDataModule has its own transforms and dataset: erasing and mixing still reach its training batches,
    and mixing one-hots with the class count found in the folder (num_classes: null)."""
    from tests.data.test_imagefolder import write_image_folder

    root = write_image_folder(tmp_path, classes=3)
    settings = dict(root=str(root), image_size=32, batch_size=6, num_workers=0)
    torch.manual_seed(0)
    images, labels = next(iter(data_module("imagefolder", **settings, random_erasing=1.0).train_dataloader()))
    assert (images == 0).flatten(1).any(1).all() and labels.dtype == torch.long  # ImageNet statistics never give 0
    _, mixed = next(iter(data_module("imagefolder", **settings, mixup_alpha=0.4).train_dataloader()))
    assert mixed.shape == (6, 3) and torch.allclose(mixed.sum(1), torch.ones(6))
