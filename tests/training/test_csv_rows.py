"""A resumed run's metrics.csv: the rows before the checkpoint are kept, without a warning that they are lost; rows a
kill lost come back from the checkpoint's history; a kill while metrics.csv is written leaves the previous file."""
from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger

from c3exp.training.train import train
from c3exp.training.csv_rows import ReplacingCSVLogger, carry_over_csv_rows, rows_from_history
from c3exp.utils.atomic import TEMP_PREFIX
from tests.conftest import REPO, SHORT_RUN, run_config


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sorted(set().union(*rows)))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("logger_class", [CSVLogger, ReplacingCSVLogger])
def test_resuming_keeps_the_earlier_rows_and_does_not_warn_they_will_be_deleted(tmp_path, logger_class):
    logger = logger_class(save_dir=tmp_path, name="csv", version="")
    rows = [{"epoch": "0", "step": "9", "val/acc1": "0.5"}, {"epoch": "1", "step": "19", "val/acc1": "0.6"},
            {"epoch": "1", "step": "20", "test/acc1": "0.7"}]  # the old run's test row, after its last checkpoint
    write_csv(tmp_path / "csv" / "metrics.csv", rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = carry_over_csv_rows(logger, tmp_path / "checkpoints" / "last.ckpt", global_step=20, history=[])
    assert kept == 2
    assert not [w for w in caught if "will be deleted" in str(w.message)]
    assert [row["val/acc1"] for row in read_rows(tmp_path / "csv" / "metrics.csv")] == ["0.5", "0.6"]


HISTORY = [{"epoch": 0, "lr": 0.1, "train/loss": 2.5, "val/acc1": 0.5},
           {"epoch": 1, "lr": 0.1, "train/loss": 2.1, "val/acc1": 0.6}]


def test_an_epochs_metrics_missing_from_the_csv_are_rebuilt_from_the_history_at_its_step():
    rows = [{"model/params": "10", "step": "0"}, {"epoch": "0", "step": "5", "val/acc1": "0.5"},
            {"epoch": "0", "step": "5", "train/loss": "2.5", "train/lr": "0.1"},
            {"epoch": "1", "step": "11", "val/acc1": "0.6"}]
    assert rows_from_history(rows, HISTORY, global_step=12) == [{"epoch": 1, "step": 11, "train/lr": 0.1, "train/loss": 2.1}]
    # an epoch with no row at all ends where equally long epochs end
    assert rows_from_history(rows[:1], HISTORY, global_step=12) == [
        {"epoch": 0, "step": 5, **{"train/lr": 0.1, "train/loss": 2.5, "val/acc1": 0.5}},
        {"epoch": 1, "step": 11, **{"train/lr": 0.1, "train/loss": 2.1, "val/acc1": 0.6}}]
    assert rows_from_history(rows[:3] + [{"epoch": "1", "step": "11", "train/loss": "2.1", "train/lr": "0.1",
                                          "val/acc1": "0.6"}], HISTORY, global_step=12) == []


STALLING_SAVE = """
import csv, shutil, sys, time
from pathlib import Path
from hydra.utils import instantiate
from omegaconf import open_dict
import c3exp

run_dir = Path(sys.argv[1])
cfg = c3exp.compose(["data=digits"])
with open_dict(cfg):
    cfg.output_dir = str(run_dir)
logger = instantiate(cfg.logger.csv)  # the CSV logger the runs use
logger.log_metrics({"train/loss": 1.0}, step=0)
logger.save()
shutil.copy(run_dir / "csv" / "metrics.csv", run_dir / "before.csv")


class Stalling(csv.DictWriter):
    def writerows(self, rows):  # the header is written: wait here to be killed
        (run_dir / "stalled").touch()
        time.sleep(600)


csv.DictWriter = Stalling
logger.log_metrics({"val/acc1": 0.5}, step=1)  # a new column: Lightning's writer rewrites the file in place
logger.save()
"""


def test_a_kill_while_metrics_csv_is_written_leaves_the_previous_file(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", STALLING_SAVE, str(tmp_path)], cwd=REPO, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 300
    while not (tmp_path / "stalled").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read()[-3000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    metrics = tmp_path / "csv" / "metrics.csv"
    assert metrics.read_bytes() == (tmp_path / "before.csv").read_bytes()
    assert [p.name for p in metrics.parent.glob(f"{TEMP_PREFIX}*")]  # the killed save's, which the next writer removes
    logger = instantiate(run_config(["data=digits"], tmp_path).logger.csv)
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.save()
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["metrics.csv"]


def test_a_row_lost_between_the_checkpoint_and_the_csv_comes_back_on_resume(two_epochs, tmp_path, one_thread):
    """A kill just after the last epoch's last.ckpt: its train row (logged after the checkpoint) never reached the CSV."""
    run_dir = tmp_path / "run"
    shutil.copytree(two_epochs["run_dir"], run_dir)
    metrics = run_dir / "csv" / "metrics.csv"
    rows = [row for row in read_rows(metrics) if not row["test/acc1"] and not row["final/test_acc1"]]
    lost = rows.pop()
    assert lost["epoch"] == "1" and lost["train/loss"] and not lost["val/acc1"]  # the last epoch's train row
    write_csv(metrics, rows)
    train(run_config(SHORT_RUN + ["trainer.max_epochs=2", "resume=auto"], run_dir))
    back = [row for row in read_rows(metrics) if row["epoch"] == "1" and row["train/loss"]]
    assert len(back) == 1 and back[0]["step"] == lost["step"]
    for key, value in lost.items():
        assert float(back[0][key] or "nan") == pytest.approx(float(value or "nan"), nan_ok=True), key
