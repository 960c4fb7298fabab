"""Image folders (c3exp/data/imagefolder.py): classes counted, a torchvision ResNet trained on them, and folders
laid out wrongly named in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import c3exp
from c3exp.errors import ConfigError, DataNotFoundError
from tests.conftest import cli_error_line
from tests.data import data_module


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
    from c3exp.training.train import train
    from tests.conftest import run_config

    root = write_image_folder(tmp_path / "images", classes=3)
    overrides = ["data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
                 "model=resnet18", "attn=se", "trainer=cpu", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    results = train(run_config(overrides, tmp_path / "run"))
    assert results["epochs"] == 1 and results["data"] == "imagefolder"
    three_classes = c3exp.build_network(c3exp.compose([*overrides, "data.num_classes=3"]))
    assert results["params"] == sum(p.numel() for p in three_classes.parameters())


def test_imagefolder_missing_root_names_the_setting(tmp_path):
    with pytest.raises(DataNotFoundError, match="data.root"):
        data_module("imagefolder", root=str(tmp_path / "none")).setup()


def test_on_device_is_refused_for_image_folders(tmp_path):
    with pytest.raises(ConfigError, match="data.on_device"):
        data_module("imagefolder", root=str(tmp_path), num_classes=2, on_device=True)


def write_images(folder: Path, count: int = 1) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (8, 8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("empty_split", ["train", "val"])
def test_an_empty_imagefolder_split_names_the_folder_and_the_layout(monkeypatch, capsys, tmp_path, empty_split):
    full = "val" if empty_split == "train" else "train"
    write_images(tmp_path / full / "cat")
    (tmp_path / empty_split).mkdir()
    line = cli_error_line(monkeypatch, capsys, tmp_path, ["data=imagefolder", f"data.root={tmp_path}"])
    assert line.startswith(f"error: imagefolder: {tmp_path.resolve() / empty_split} has no class sub-folders: "
                           "expected one sub-folder per class, each holding images ending in .jpg, .jpeg, .png")


def test_images_straight_in_the_split_folder_get_a_hint(monkeypatch, capsys, tmp_path):
    write_images(tmp_path / "train")
    write_images(tmp_path / "val" / "cat")
    line = cli_error_line(monkeypatch, capsys, tmp_path, ["data=imagefolder", f"data.root={tmp_path}"])
    assert "has no class sub-folders (its images lie directly in it: move them into one sub-folder per class)" in line


def test_an_empty_imagefolder_class_folder_is_named(monkeypatch, capsys, tmp_path):
    write_images(tmp_path / "train" / "cat")
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    write_images(tmp_path / "val" / "cat")
    line = cli_error_line(monkeypatch, capsys, tmp_path, ["data=imagefolder", f"data.root={tmp_path}"])
    assert line.startswith(f"error: imagefolder: {tmp_path.resolve() / 'train'} has class folders without images "
                           "('dog'): expected one sub-folder per class, each holding images ending in .jpg, .jpeg")
