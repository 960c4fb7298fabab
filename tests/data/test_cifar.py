"""CIFAR (c3exp/data/cifar.py) on files written here in the python-version format: the splits, the batches,
and dataset files that are missing, unofficial, truncated or in another format, each one line."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from c3exp.data import CIFARDataModule
from c3exp.errors import DataNotFoundError
from tests.conftest import cli_error_line, write_cifar
from tests.data import data_module


def cifar(root: Path, name: str = "cifar10", **kwargs) -> CIFARDataModule:
    kwargs = {"batch_size": 8, "num_workers": 0, "download": False, "verify_checksums": False, **kwargs}
    return data_module(name, root=str(root), **kwargs)


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_files_round_trip(tmp_path, variant):
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


# ----------------------------------------------------------------------------------------------
# Dataset files that are there but unusable fail with one line saying what is wrong with them, not a traceback.


def cifar_overrides(variant: str, root: Path, *settings: str) -> list[str]:
    return [f"data={variant}", f"data.root={root}", "data.download=false", *settings]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("verify", ["true", "false"])
def test_a_truncated_cifar_batch_is_named_as_truncated(monkeypatch, capsys, cifar10_root, verify):
    batch = cifar10_root / "cifar-10-batches-py" / "data_batch_1"
    truncate(batch)
    line = cli_error_line(monkeypatch, capsys, cifar10_root, cifar_overrides("cifar10", cifar10_root, f"data.verify_checksums={verify}"))
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
    line = cli_error_line(monkeypatch, capsys, tmp_path, cifar_overrides(variant, tmp_path))
    assert line.startswith(f"error: {variant}: the files in {tmp_path.resolve() / folder} fail torchvision's md5 "
                           f"checksum ({files}), so they are not the official")
    assert "for a deliberately modified copy in the same format, set data.verify_checksums=false" in line
    assert "not found" not in line


def test_a_cifar_batch_in_another_format_is_named(monkeypatch, capsys, cifar10_root):
    (cifar10_root / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02]q\x00.")  # a pickled empty list
    line = cli_error_line(monkeypatch, capsys, cifar10_root, cifar_overrides("cifar10", cifar10_root, "data.verify_checksums=false"))
    assert "test_batch is not a python-version CIFAR file: it holds a list, not a dict" in line


def test_a_missing_cifar_dataset_keeps_the_not_found_advice(monkeypatch, capsys, tmp_path):
    line = cli_error_line(monkeypatch, capsys, tmp_path, cifar_overrides("cifar10", tmp_path))
    assert line.startswith(f"error: cifar10 not found: looked for {tmp_path.resolve() / 'cifar-10-batches-py'} "
                           "(no such folder). Either let c3exp download it")


@pytest.mark.parametrize("verify", ["true", "false"])
@pytest.mark.parametrize("name", ["data_batch_1", "batches.meta"])
def test_a_cifar_file_that_would_run_code_is_refused_and_nothing_runs(monkeypatch, capsys, cifar10_root, tmp_path, verify, name):
    import pickle

    from tests.test_checkpoints import RunsCode

    marker = tmp_path / "code-ran"
    (cifar10_root / "cifar-10-batches-py" / name).write_bytes(pickle.dumps({"data": RunsCode(marker)}, protocol=2))
    line = cli_error_line(monkeypatch, capsys, cifar10_root, cifar_overrides("cifar10", cifar10_root, f"data.verify_checksums={verify}"))
    assert f"{name} is truncated or corrupt: unpickling fails with UnpicklingError: it names " in line
    assert "which no CIFAR file holds" in line
    assert not marker.exists()
