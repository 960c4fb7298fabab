"""c3exp/errors.py's run_reporting_user_errors: a full disk or a read-only run folder while training, and a one-class
image folder, are one line (`error: ...`, status 2), the line also in the run's train.log."""
from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from c3exp.errors import ConfigError, run_reporting_user_errors
from tests.conftest import c3exp_cli, error_line
from tests.data import data_module


def raise_wrapped(error: OSError) -> None:
    """What torch.save does with a failed write: a RuntimeError raised while handling the OSError."""
    try:
        raise error
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 95104 vs 95000") from None


def raise_plain(error: OSError) -> None:
    raise error


@pytest.mark.parametrize("raise_it", [raise_plain, raise_wrapped], ids=["OSError", "wrapped by torch.save"])
@pytest.mark.parametrize(
    "code,filename,line",
    [
        (errno.ENOSPC, "/runs/a/last.ckpt", "error: cannot write /runs/a/last.ckpt: No space left on device\n"),
        (errno.EROFS, "/runs/a/metrics.csv", "error: cannot write /runs/a/metrics.csv: Read-only file system\n"),
        (errno.EACCES, "/runs/a", "error: cannot write /runs/a: Permission denied\n"),
        (errno.ENOSPC, None, f"error: cannot write {os.getcwd()}: No space left on device\n"),  # write() names no file
    ],
)
def test_a_failed_write_is_one_line_naming_the_file_and_logged(capsys, caplog, raise_it, code, filename, line):
    error = OSError(code, os.strerror(code), *([filename] if filename else []))
    assert error_line(lambda: raise_it(error), capsys) == line
    assert [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR] == [line.strip()]


def test_other_os_errors_keep_their_traceback():
    with pytest.raises(FileNotFoundError):
        run_reporting_user_errors(lambda: raise_plain(FileNotFoundError(errno.ENOENT, "No such file", "/x")))


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 128 KiB tmpfs: room for Hydra's files and the log, not for a checkpoint (tests run as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # lazy: a process still closing its files


@pytest.mark.slow
def test_a_disk_that_fills_up_while_training_is_one_line_also_in_train_log(tiny_disk, tmp_path):
    run_dir = tiny_disk / "run"
    args = ["data=digits", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    done = c3exp_cli(args, cwd=tmp_path, timeout=300)
    line = f"error: cannot write {run_dir}: No space left on device"
    assert done.returncode == 2 and done.stderr == line + "\n", done.stderr[-3000:]
    assert (run_dir / "train.log").read_text().strip().endswith(line)


def test_an_image_folder_with_one_class_is_one_line(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "cat" / "0.png")
    with pytest.raises(ConfigError) as error:
        data_module("imagefolder", root=str(tmp_path)).setup()
    assert (error.value.key, error.value.value) == ("data.root", str(tmp_path))
    assert error.value.allowed == "a folder whose train/ has 2 or more class sub-folders: it has one, 'cat'"


@pytest.mark.parametrize("allowed,words", [("an integer >= 1", "an integer >= 1"), ((16, 32), "one of 16, 32")])
def test_a_bad_setting_is_one_line_naming_the_key_the_value_and_what_is_allowed(allowed, words):
    """The form every bad setting takes; other tests check only that a line names its key and value."""
    error = ConfigError("data.batch_size", 0, allowed)
    assert str(error) == f"data.batch_size=0 is not valid: expected {words}"
    assert (error.key, error.value, error.allowed) == ("data.batch_size", 0, words)
