"""Training end to end on the bundled digits (c3exp/training/train.py): results.json, metrics.csv, checkpoints, exact resume
(from a checkpoint, resume=auto, after SIGKILL, with workers, with each option of the strong recipe), determinism, the
learning-rate schedule, the weights' moving average in the final test. Checkpoints saved beside themselves: a save that
fails midway (a full disk) keeps the previous file whole, leaves no temporary file and no partial file under a
checkpoint's name; ModelCheckpoint and build_trainer use it."""
from __future__ import annotations

import csv
import errno
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import c3exp
from c3exp.errors import run_reporting_user_errors
from c3exp.errors import ConfigError
from c3exp.cli.eval import evaluate
from c3exp.training.train import (AtomicCheckpointIO, build_trainer, newest_good_checkpoint, train, use_the_cpus_slurm_gave,
                                  with_atomic_checkpoint_io)
from c3exp.utils.atomic import TEMP_PREFIX
from c3exp.utils.complexity import count_macs, count_params
from tests.conftest import (SHORT_RUN as SHORT, SMALL_DIGITS as SMALL, TINY_DIGITS, assert_names_bad_setting, c3exp_cli,
                            run_config, without_timing)

@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory) -> dict:
    """An uninterrupted 3-epoch run: the reference for the resume test."""
    return train(run_config(SHORT + ["trainer.max_epochs=3"], tmp_path_factory.mktemp("straight")))


def test_results_file_has_the_run_summary(two_epochs):
    run_dir = Path(two_epochs["run_dir"])
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["model"] == "resnet20" and on_disk["attn"] == "c3" and on_disk["data"] == "digits"
    assert on_disk["task_name"] == "train"
    history = on_disk["history"]
    assert on_disk["epochs"] == 2 and [row["epoch"] for row in history] == [0, 1]
    for metric in ("acc1", "acc5"):
        assert on_disk[f"best_val_{metric}"] == max(row[f"val/{metric}"] for row in history)
        assert on_disk[f"final_val_{metric}"] == history[-1][f"val/{metric}"]
    tested = [row for row in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if row["test/acc1"]]
    assert [(float(row["test/acc1"]), float(row["test/acc5"])) for row in tested] == [
        pytest.approx((on_disk["test_acc1"], on_disk["test_acc5"]))]  # the test metrics the loggers got
    network = c3exp.build_network(c3exp.compose(SHORT))
    assert (on_disk["params"], on_disk["macs"]) == (count_params(network), count_macs(network))  # of one 32 px image
    assert on_disk["train_images_per_sec"] == history[1]["train/images_per_sec"]  # after the first epoch's warm-up
    assert on_disk["wall_seconds"] > on_disk["train_seconds"]
    assert Path(on_disk["checkpoints"]["last"]).is_file() and Path(on_disk["checkpoints"]["best"]).is_file()


@pytest.mark.parametrize("keep", [True, False])
def test_training_keeps_freed_memory_as_configured(monkeypatch, tmp_path, keep):
    """train() sets the allocator up (or not) before any data or model exists."""
    calls = []

    def stop_after_allocator_setup(*args, **kwargs):
        raise RuntimeError("stop here")

    monkeypatch.setattr("c3exp.training.train.keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr("c3exp.training.train.build_datamodule", stop_after_allocator_setup)
    with pytest.raises(RuntimeError, match="stop here"):
        train(run_config(SHORT + [f"keep_freed_memory={str(keep).lower()}"], tmp_path))
    assert calls == (["kept"] if keep else [])


def test_metrics_csv_has_the_standard_keys(two_epochs):
    rows = list(csv.DictReader((Path(two_epochs["run_dir"]) / "csv" / "metrics.csv").open()))
    columns = set(rows[0])
    assert {"train/loss", "train/acc1", "val/acc1", "val/acc5", "train/lr", "train/images_per_sec"} <= columns
    assert {"model/params", "model/macs"} <= columns
    assert sum(1 for row in rows if row["val/acc1"]) == 2


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch_exactly(two_epochs, three_epochs, tmp_path):
    last = two_epochs["checkpoints"]["last"]
    resumed = train(run_config(SHORT + ["trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path))
    assert [row["epoch"] for row in resumed["history"]] == [0, 1, 2]
    assert without_timing(resumed["history"][:2]) == without_timing(two_epochs["history"])
    # the resumed epoch sees the same batches and augmentations as the uninterrupted run
    assert without_timing(resumed["history"]) == without_timing(three_epochs["history"])
    assert resumed["test_acc1"] == three_epochs["test_acc1"]


@pytest.mark.slow
def test_resume_auto_picks_up_the_run_directory(two_epochs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(two_epochs["run_dir"], run_dir)
    resumed = train(run_config(SHORT + ["trainer.max_epochs=3", "resume=auto"], run_dir))
    assert [row["epoch"] for row in resumed["history"]] == [0, 1, 2]
    # the CSV keeps the first leg's rows (Lightning's CSVLogger deletes the file it finds) and
    # drops the first leg's test and final rows, logged at the checkpoint's step
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert [row["epoch"] for row in rows if row["val/acc1"]] == ["0", "1", "2"]
    assert [float(row["val/acc1"]) for row in rows if row["val/acc1"]] == [r["val/acc1"] for r in resumed["history"]]
    assert sum(1 for row in rows if row["model/params"]) == 1
    assert sum(1 for row in rows if row["test/acc1"]) == 1 and sum(1 for row in rows if row["final/test_acc1"]) == 1
    assert resumed["wall_seconds"] > resumed["train_seconds"] > two_epochs["train_seconds"]
    fresh = train(run_config(SHORT + ["trainer.max_epochs=1", "resume=auto"], tmp_path / "empty"))
    assert [row["epoch"] for row in fresh["history"]] == [0]


def test_rerunning_a_finished_run_keeps_its_csv_rows(two_epochs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(two_epochs["run_dir"], run_dir)
    before = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    again = train(run_config(SHORT + ["trainer.max_epochs=2", "resume=auto"], run_dir))
    after = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert again["test_acc1"] == two_epochs["test_acc1"]
    assert [row for row in after if not row["test/acc1"] and not row["final/test_acc1"]] == [
        row for row in before if not row["test/acc1"] and not row["final/test_acc1"]
    ]
    assert len(after) == len(before)


def test_reusing_a_run_directory_with_another_network_is_one_line(two_epochs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(two_epochs["run_dir"], run_dir)
    other = [o for o in SHORT if o != "model=resnet20"] + ["model=resnet32", "trainer.max_epochs=3", "resume=auto"]
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_user_errors(lambda: train(run_config(other, run_dir)))
    message = capsys.readouterr().err.strip().splitlines()[-1]  # after any log lines of earlier tests' handlers
    assert exit_info.value.code == 2 and message.startswith("error: resume=")
    assert "these differ: model.depth=32 (the checkpoint's run: 20), model.name='resnet32' (the checkpoint's run: 'resnet20')" in message
    assert "resume=never" in message


def test_resume_auto_skips_a_checkpoint_cut_short(two_epochs, tmp_path):
    """A kill while last.ckpt was being written leaves it truncated: resume from the newest one that opens."""
    good = Path(two_epochs["checkpoints"]["best"])
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / good.name).write_bytes(good.read_bytes())
    data = Path(two_epochs["checkpoints"]["last"]).read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])
    assert newest_good_checkpoint(folder)[0] == folder / good.name
    (folder / "last.ckpt").write_bytes(data)
    assert newest_good_checkpoint(folder)[0] == folder / "last.ckpt"


@pytest.mark.slow
def test_sigkill_mid_run_then_the_same_command_resumes_to_identical_metrics(tmp_path):
    args = [*SMALL, "model=resnet20", "attn=c3", "trainer.max_epochs=3", "trainer.limit_train_batches=12",
            "trainer.deterministic=true"]
    straight = c3exp_cli([*args, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "c3exp", *args, f"hydra.run.dir={run_dir}"]
    victim = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (run_dir / "results.json").exists()

    resumed = c3exp_cli([*args, f"hydra.run.dir={run_dir}", "resume=auto"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "straight" / "results.json").read_text())
    got = json.loads((run_dir / "results.json").read_text())
    assert without_timing(got["history"]) == without_timing(expected["history"])
    assert (got["test_acc1"], got["test_acc5"]) == (expected["test_acc1"], expected["test_acc5"])


def test_same_seed_deterministic_runs_give_identical_metrics(tmp_path):
    args = TINY_DIGITS + ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                          "trainer.limit_test_batches=2", "trainer.deterministic=true", "seed=3"]
    one = train(run_config(args, tmp_path / "one"))
    two = train(run_config(args, tmp_path / "two"))
    assert without_timing(one["history"]) == without_timing(two["history"]) and one["test_acc1"] == two["test_acc1"]


@pytest.mark.slow
def test_resume_is_exact_with_dataloader_workers(tmp_path):
    args = TINY_DIGITS + ["data.num_workers=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                          "trainer.limit_test_batches=2"]
    straight = train(run_config(args + ["trainer.max_epochs=2"], tmp_path / "straight"))
    first = train(run_config(args + ["trainer.max_epochs=1"], tmp_path / "legs"))
    resumed = train(run_config(args + ["trainer.max_epochs=2"], tmp_path / "legs"))  # resume=auto
    assert first["epochs"] == 1 and without_timing(resumed["history"]) == without_timing(straight["history"])


@pytest.mark.slow
def test_quickstart_command_learns_digits(tmp_path):
    """The issue's acceptance command: ResNet-20 + C3, 5 epochs on digits, test acc1 >= 0.90."""
    cmd = [sys.executable, "-m", "c3exp", "model=resnet20", "attn=c3", "data=digits", "trainer.max_epochs=5",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["epochs"] == 5 and results["test_acc1"] >= 0.90


EVERY_OTHER = TINY_DIGITS + ["model=resnet20", "attn=none", "data.batch_size=8", "trainer.limit_train_batches=2",
                             "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.check_val_every_n_epoch=2"]


@pytest.mark.usefixtures("one_thread")
def test_every_training_epoch_has_a_history_row_when_validation_is_sparser(tmp_path):
    """check_val_every_n_epoch=2: 4 rows (train metrics and timing each), val keys in epochs 1 and 3 only."""
    import torch

    results = train(run_config(EVERY_OTHER + ["trainer.max_epochs=4"], tmp_path / "straight"))
    on_disk = json.loads((tmp_path / "straight" / "results.json").read_text())
    history = on_disk["history"]
    assert on_disk["epochs"] == 4 and [row["epoch"] for row in history] == [0, 1, 2, 3]
    for row in history:
        assert {"lr", "train/loss", "train/acc1", "train/acc5"} <= set(row)
        assert row["train/images_per_sec"] == pytest.approx(2 * 8 / row["train/epoch_time"])  # 2 batches of 8
    assert [sorted(k for k in row if k.startswith("val/")) for row in history] == [
        [], ["val/acc1", "val/acc5", "val/loss"], [], ["val/acc1", "val/acc5", "val/loss"]]
    validated = [history[1], history[3]]
    assert on_disk["best_val_acc1"] == max(row["val/acc1"] for row in validated)
    assert on_disk["best_epoch"] in (1, 3) and history[on_disk["best_epoch"]]["val/acc1"] == on_disk["best_val_acc1"]
    assert on_disk["best_val_acc5"] == max(row["val/acc5"] for row in validated)
    assert on_disk["final_val_acc1"] == history[3]["val/acc1"] and on_disk["final_val_acc5"] == history[3]["val/acc5"]
    assert results["train_seconds"] == pytest.approx(sum(row["train/epoch_time"] for row in history))
    # last.ckpt (saved at every epoch's end) carries every row; the best one (saved after validation) its epoch's
    load = lambda path: torch.load(path, map_location="cpu", weights_only=False)["c3exp"]["history"]
    assert load(results["checkpoints"]["last"]) == history
    assert load(results["checkpoints"]["best"]) == history[: on_disk["best_epoch"] + 1]
    # resuming from an epoch without validation continues the same history
    first_leg = train(run_config(EVERY_OTHER + ["trainer.max_epochs=3"], tmp_path / "first"))
    assert [("val/acc1" in row) for row in first_leg["history"]] == [False, True, False]
    resumed = train(run_config(EVERY_OTHER + ["trainer.max_epochs=4", f"ckpt_path={first_leg['checkpoints']['last']}"],
                               tmp_path / "resumed"))
    assert without_timing(resumed["history"]) == without_timing(history)
    assert resumed["best_val_acc1"] == on_disk["best_val_acc1"] and resumed["epochs"] == 4


def test_onecycle_gets_the_run_length_in_steps_from_lightning(tmp_path):
    """2 epochs x 3 batches: OneCycleLR (which needs total_steps) spans exactly the run's 6 steps.

    Too few steps would raise when stepped past its end; too many would leave the rate still warming
    up (rising) at the end of the run instead of annealed below its first epoch's.
    """
    results = train(run_config([*TINY_DIGITS, "model=resnet20", "attn=none", "optim=onecycle", "optim.optimizer.lr=0.01",
                                "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                                "trainer.limit_test_batches=1"], tmp_path))
    first, last = (row["lr"] for row in results["history"])
    assert last < first < 0.01 and last < 0.002


def test_resuming_onecycle_for_more_epochs_than_its_schedule_is_one_line(tmp_path):
    """The checkpoint's OneCycleLR spans 3 steps; 2 epochs of 3 would step past its end mid-run."""
    args = [*TINY_DIGITS, "model=resnet20", "attn=none", "optim=onecycle", "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    first = train(run_config([*args, "trainer.max_epochs=1"], tmp_path))
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=2 .*at most the 3 steps .*\(6 asked\)"):
        train(run_config([*args, "trainer.max_epochs=2", f"ckpt_path={first['checkpoints']['last']}"], tmp_path))


# The strong CIFAR recipe's options, each off by default: task, optimisation and data augmentation. The warm-up spans the
# resume point (2.5 epochs of 3), so a resumed run picks up its ramp mid-way.
RECIPE_OPTIONS = ["task.label_smoothing=0.1", "task.tta_flip=true", "optim.warmup_epochs=2.5", "optim.optimizer.nesterov=true",
                  "optim.ema_decay=0.9", "data.mixup_alpha=0.2", "data.cutmix_alpha=1.0", "data.random_erasing=0.5"]


@pytest.mark.slow
@pytest.mark.parametrize("option", RECIPE_OPTIONS)
def test_resume_is_exact_with_each_recipe_option(option, three_epochs, tmp_path):
    args = SHORT + [option]
    straight = train(run_config(args + ["trainer.max_epochs=3"], tmp_path / "straight"))
    assert without_timing(straight["history"]) != without_timing(three_epochs["history"])  # the option changed the run
    first = train(run_config(args + ["trainer.max_epochs=2"], tmp_path / "legs"))
    resumed = train(run_config(args + ["trainer.max_epochs=3", f"ckpt_path={first['checkpoints']['last']}"], tmp_path / "legs"))
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
    assert (resumed["test_acc1"], resumed["test_loss"]) == (straight["test_acc1"], straight["test_loss"])


@pytest.mark.parametrize("test_ckpt", ["last", "best"])
def test_with_ema_the_final_test_and_eval_use_the_averaged_weights(test_ckpt, tmp_path):
    """The checkpoint's state_dict is the average, its current_model_state the raw weights, which test otherwise."""
    results = train(run_config(SHORT + ["trainer.max_epochs=2", "optim.ema_decay=0.9", f"test_ckpt={test_ckpt}"], tmp_path))
    tested = results["checkpoints"][test_ckpt]
    checkpoint = torch.load(tested, weights_only=True)
    raw = tmp_path / "raw.ckpt"
    torch.save({**checkpoint, "state_dict": checkpoint["current_model_state"]}, raw)
    averaged, unaveraged = evaluate(tested)["test/loss"], evaluate(raw)["test/loss"]
    assert results["test_loss"] == pytest.approx(averaged, abs=1e-6)
    assert abs(averaged - unaveraged) > 1e-4


@pytest.mark.slow
def test_the_strong_recipe_trains_the_quickstart_with_every_option_on(tmp_path):
    """recipe=strong on the digits (short epochs): it runs, records its recipe, and its checkpoints hold both weights."""
    results = train(run_config(SHORT + ["recipe=strong", "trainer.max_epochs=2", "optim.warmup_epochs=1",
                                        "optim.ema_decay=0.9"], tmp_path))
    assert results["recipe"] == "strong" and results["optim"] == "cosine" and results["epochs"] == 2
    checkpoint = torch.load(results["checkpoints"]["last"], map_location="cpu", weights_only=False)
    assert set(checkpoint["current_model_state"]) == set(checkpoint["state_dict"])  # raw weights beside the average
    assert any(not torch.equal(checkpoint["current_model_state"][k], v) for k, v in checkpoint["state_dict"].items())


# -- checkpoints saved beside themselves ------------------------------------------------------------------

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
    cfg = run_config(SHORT, tmp_path)
    assert isinstance(build_trainer(cfg).strategy.checkpoint_io, AtomicCheckpointIO)
    with open_dict(cfg):
        cfg.trainer.plugins = [{"_target_": "lightning.pytorch.plugins.io.TorchCheckpointIO"}]
    assert type(build_trainer(cfg).strategy.checkpoint_io) is TorchCheckpointIO


@pytest.mark.parametrize("override, key, value, specific", [
    ("callbacks.model_checkpoint.save_top_k=x", "callbacks.model_checkpoint.save_top_k", "x", ""),
    ("+callbacks.epoch_seed.sed=1", "callbacks.epoch_seed.sed", 1, "c3exp.training.callbacks.EpochSeed: seed")])
def test_a_bad_callback_setting_is_one_line_naming_its_key(tmp_path, override, key, value, specific):
    with pytest.raises(ConfigError) as error:
        build_trainer(run_config([*SHORT, override], tmp_path))
    assert_names_bad_setting(str(error.value), key, value)
    assert specific in error.value.allowed


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
    args = SHORT + ["trainer.limit_val_batches=2", "callbacks.model_checkpoint.save_top_k=-1", "resume=auto"]
    train(run_config(args + ["trainer.max_epochs=1"], run_dir))
    before = {path.name: path.read_bytes() for path in small_disk.iterdir()}
    fill(small_disk, room=len(before["last.ckpt"]) // 2)
    with pytest.raises(Exception) as failure:
        train(run_config(args + ["trainer.max_epochs=3"], run_dir))
    assert any(entry.name == "save_checkpoint" for entry in failure.traceback)
    assert {path.name: path.read_bytes() for path in small_disk.iterdir()} == before


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_slurm_job_uses_as_many_threads_as_its_cpus(monkeypatch, threads):
    """A SLURM job's threads: the CPUs it was given, not every core of the node."""
    torch.set_num_threads(2)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert use_the_cpus_slurm_gave() == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("env", [{}, {"SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "2"}, {"SLURM_CPUS_PER_TASK": ""}])
def test_outside_slurm_or_with_omp_num_threads_the_count_stays(monkeypatch, threads, env):
    torch.set_num_threads(2)
    for key in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert use_the_cpus_slurm_gave() is None and torch.get_num_threads() == 2
