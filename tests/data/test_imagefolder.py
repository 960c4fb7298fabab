"""Dataset files that are there but unusable fail with one line saying what is wrong with them, not a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_main, write_cifar

TINY = ["trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.enable_progress_bar=false",
        "data.num_workers=0"]


def error_of(monkeypatch, capsys, tmp_path: Path, data: list[str]) -> str:
    """Run the training CLI; check it exits 2 with exactly one stderr line, `error: ...`, and return that line."""
    code, err = run_main(monkeypatch, capsys, [*data, *TINY, f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def cifar(variant: str, root: Path, *settings: str) -> list[str]:
    return [f"data={variant}", f"data.root={root}", "data.download=false", *settings]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("verify", ["true", "false"])
def test_a_truncated_cifar_batch_is_named_as_truncated(monkeypatch, capsys, cifar10_root, verify):
    batch = cifar10_root / "cifar-10-batches-py" / "data_batch_1"
    truncate(batch)
    line = error_of(monkeypatch, capsys, cifar10_root, cifar("cifar10", cifar10_root, f"data.verify_checksums={verify}"))
    assert f"{batch.resolve()} is truncated or corrupt" in line
    assert "not found" not in line and "data.verify_checksums" not in line  # turning checks off would not help


@pytest.mark.parametrize("variant,folder,files", [
    ("cifar10", "cifar-10-batches-py", ", ".join([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"])),
    ("cifar100", "cifar-100-python", "train, test, meta"),
], ids=["cifar10", "cifar100"])
def test_cifar_files_failing_the_checksum_are_called_unofficial_not_missing(
    monkeypatch, capsys, tmp_path, variant, folder, files
):
    write_cifar(tmp_path, variant, per_file=4)
    line = error_of(monkeypatch, capsys, tmp_path, cifar(variant, tmp_path))
    assert line.startswith(f"error: {variant}: the files in {tmp_path.resolve() / folder} fail torchvision's md5 "
                           f"checksum ({files}), so they are not the official")
    assert "for a deliberately modified copy in the same format, set data.verify_checksums=false" in line
    assert "not found" not in line


def test_a_cifar_batch_in_another_format_is_named(monkeypatch, capsys, cifar10_root):
    (cifar10_root / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02]q\x00.")  # a pickled empty list
    line = error_of(monkeypatch, capsys, cifar10_root, cifar("cifar10", cifar10_root, "data.verify_checksums=false"))
    assert "test_batch is not a python-version CIFAR file: it holds a list, not a dict" in line


def test_a_missing_cifar_dataset_keeps_the_not_found_advice(monkeypatch, capsys, tmp_path):
    line = error_of(monkeypatch, capsys, tmp_path, cifar("cifar10", tmp_path))
    assert line.startswith(f"error: cifar10 not found: looked for {tmp_path.resolve() / 'cifar-10-batches-py'} "
                           "(Dataset not found or corrupted). Either let c3exp download it")


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
    line = error_of(monkeypatch, capsys, tmp_path, ["data=imagefolder", f"data.root={tmp_path}"])
    assert line.startswith(f"error: imagefolder: {tmp_path.resolve() / empty_split} has no class sub-folders: "
                           "expected one sub-folder per class, each holding images ending in .jpg, .jpeg, .png")


def test_images_straight_in_the_split_folder_get_a_hint(monkeypatch, capsys, tmp_path):
    write_images(tmp_path / "train")
    write_images(tmp_path / "val" / "cat")
    line = error_of(monkeypatch, capsys, tmp_path, ["data=imagefolder", f"data.root={tmp_path}"])
    assert "has no class sub-folders (its images lie directly in it: move them into one sub-folder per class)" in line


def test_an_empty_imagefolder_class_folder_is_named(monkeypatch, capsys, tmp_path):
    write_images(tmp_path / "train" / "cat")
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    write_images(tmp_path / "val" / "cat")
    line = error_of(monkeypatch, capsys, tmp_path, ["data=imagefolder", f"data.root={tmp_path}"])
    assert line.startswith(f"error: imagefolder: {tmp_path.resolve() / 'train'} has class folders without images "
                           "('dog'): expected one sub-folder per class, each holding images ending in .jpg, .jpeg")
