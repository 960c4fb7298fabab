"""Checkpoints saved beside themselves: a save that fails midway (a full disk) keeps the previous file whole,
leaves no temporary file and no partial file under a checkpoint's name; ModelCheckpoint and build_trainer use it."""
from __future__ import annotations

import errno
import io
import shutil
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from c3exp.training.train import build_trainer, train
from c3exp.training.checkpoint_io import AtomicCheckpointIO, with_atomic_checkpoint_io
from c3exp.utils.atomic import TEMP_PREFIX
from tests.conftest import SHORT_RUN, run_config


def disk_full_after(fraction: float):
    """A torch.save that writes the first `fraction` of the checkpoint, then fails as a full disk does."""
    real_save = torch.save

    def save(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        file.write(data[: int(len(data) * fraction)])
        file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 0, "weights": torch.arange(10_000)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", disk_full_after(0.5))
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 1, "weights": torch.zeros(10_000)}, path)
    assert path.read_bytes() == before
    with pytest.raises(OSError):  # a new checkpoint name: no partial file under it
        AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path.with_name("best-epoch001.ckpt"))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_saving_never_stages_the_checkpoint_in_tmpdir(tmp_path, monkeypatch):
    """$TMPDIR may be another filesystem, where moving the file into place is a copy that truncates the old one."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmpdir))
    path = tmp_path / "run" / "last.ckpt"
    staged = []
    monkeypatch.setattr(shutil, "move", lambda src, dst, *a, **k: staged.append(src))  # what fsspec moves with
    for epoch in range(2):
        AtomicCheckpointIO().save_checkpoint({"epoch": epoch}, path)
    assert torch.load(path)["epoch"] == 1 and not staged and not list(tmpdir.iterdir())


def test_temp_files_of_killed_saves_go_at_the_next_save(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    leftovers = [folder / f"{TEMP_PREFIX}last.ckpt.a1b2", folder / f"{TEMP_PREFIX}best-epoch003-0.5000.ckpt.c3d4"]
    other = folder / f"{TEMP_PREFIX}notes.txt.e5f6"
    for path in [*leftovers, other]:
        path.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"epoch": 4}, folder / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["last.ckpt", other.name])


class RisingScore(L.LightningModule):
    """A linear model whose `score` rises every epoch, so that each epoch saves a new best and removes the old one."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("score", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(2, 2)), batch_size=1)

    def val_dataloader(self):
        return self.train_dataloader()


def test_model_checkpoint_replaces_and_removes_its_files_through_it(tmp_path):
    best = ModelCheckpoint(dirpath=tmp_path, filename="best-{epoch}", monitor="score", mode="max", save_top_k=1)
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", save_on_train_epoch_end=True, enable_version_counter=False)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, callbacks=[best, last],
                        plugins=with_atomic_checkpoint_io(None), enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(RisingScore())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-epoch=2.ckpt", "last.ckpt"]
    assert best.best_model_path == str(tmp_path / "best-epoch=2.ckpt")
    assert torch.load(last.last_model_path or last.best_model_path, weights_only=False)["epoch"] == 2


def test_build_trainer_saves_through_it_unless_the_config_names_a_checkpoint_io(tmp_path):
    cfg = run_config(SHORT_RUN, tmp_path)
    assert isinstance(build_trainer(cfg).strategy.checkpoint_io, AtomicCheckpointIO)
    with open_dict(cfg):
        cfg.trainer.plugins = [{"_target_": "lightning.pytorch.plugins.io.TorchCheckpointIO"}]
    assert type(build_trainer(cfg).strategy.checkpoint_io) is TorchCheckpointIO


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of its own (a tmpfs) at <tmp>/run/checkpoints, apart from $TMPDIR's; root only."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazy: a failed run may still map a checkpoint


def fill(disk: Path, room: int) -> None:
    """Shrink `disk` to what it holds and `room` bytes more."""
    subprocess.run(["mount", "-o", f"remount,size={shutil.disk_usage(disk).used + room}", str(disk)], check=True)


def test_a_full_disk_keeps_the_previous_checkpoint_whole(small_disk):
    """Lightning's move from $TMPDIR to another filesystem truncates last.ckpt, then runs out of room copying."""
    path = small_disk / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 0, "weights": torch.zeros(250_000)}, path)  # 1 MB
    before = path.read_bytes()
    fill(small_disk, room=256 * 1024)
    with pytest.raises(Exception):  # ENOSPC, or torch's writer's own error on the short write
        AtomicCheckpointIO().save_checkpoint({"epoch": 1, "weights": torch.zeros(500_000)}, path)  # 2 MB
    assert path.read_bytes() == before and [p.name for p in small_disk.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_a_run_on_a_full_disk_fails_keeping_its_checkpoints_whole(small_disk, one_thread):
    """A full disk at a new best-*.ckpt (save_top_k=-1: one every epoch) leaves no partial file under that name."""
    run_dir = small_disk.parent
    args = SHORT_RUN + ["trainer.limit_val_batches=2", "callbacks.model_checkpoint.save_top_k=-1", "resume=auto"]
    train(run_config(args + ["trainer.max_epochs=1"], run_dir))
    before = {path.name: path.read_bytes() for path in small_disk.iterdir()}
    fill(small_disk, room=len(before["last.ckpt"]) // 2)
    with pytest.raises(Exception) as failure:
        train(run_config(args + ["trainer.max_epochs=3"], run_dir))
    assert any(entry.name == "save_checkpoint" for entry in failure.traceback)
    assert {path.name: path.read_bytes() for path in small_disk.iterdir()} == before
