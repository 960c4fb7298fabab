"""The loggers (c3exp/training/loggers.py). W&B: which mode wins, and when a run directory's W&B id is reused or
replaced. CSV: a resumed run's metrics.csv keeps the rows before the checkpoint, without a warning that they are lost;
rows a kill lost come back from the checkpoint's history; a kill while metrics.csv is written leaves the previous file."""
from __future__ import annotations

import csv
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from c3exp.errors import ConfigError
from c3exp.training.loggers import (RUN_ID_FILE, ReplacingCSVLogger, carry_over_csv_rows, persistent_run_id,
                                    reachable_mode, resolve_mode, rows_from_history)
from c3exp.training.train import train
from c3exp.utils.atomic import TEMP_PREFIX
from tests.conftest import REPO, SHORT_RUN, run_config


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)


@pytest.mark.parametrize("env_mode,mode", [("disabled", "disabled"), ("offline", "offline"), ("online", "online"),
                                           ("dryrun", "offline")])
def test_auto_mode_follows_an_exported_wandb_mode(credentials, monkeypatch, env_mode, mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    assert resolve_mode("auto") == mode


def test_auto_mode_without_wandb_mode_is_online_with_credentials_and_offline_without(credentials, monkeypatch):
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "")  # set but empty: no preference
    assert resolve_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", "/nonexistent")
    assert resolve_mode("auto") == "offline"


def test_resume_auto_reuses_the_id(tmp_path):
    first = persistent_run_id(tmp_path / "run", resume="auto")
    assert persistent_run_id(tmp_path / "run", resume="auto") == first
    assert (tmp_path / "run" / RUN_ID_FILE).read_text().strip() == first


def test_resume_never_starts_a_new_id_and_keeps_it(tmp_path):
    (tmp_path / RUN_ID_FILE).write_text("oldrun12\n")
    fresh = persistent_run_id(tmp_path, resume="never")
    assert fresh != "oldrun12"
    assert (tmp_path / RUN_ID_FILE).read_text().strip() == fresh
    assert persistent_run_id(tmp_path, resume="auto") == fresh  # a later resume continues the new run
    assert [p.name for p in tmp_path.iterdir()] == [RUN_ID_FILE]  # no temporary files left behind


def test_resume_never_on_another_rank_leaves_rank_zeros_id(tmp_path, monkeypatch):
    """DDP children start after rank 0 has written its new id; replacing it would orphan rank 0's W&B run."""
    (tmp_path / RUN_ID_FILE).write_text("rank0new\n")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    persistent_run_id(tmp_path, resume="never")
    assert (tmp_path / RUN_ID_FILE).read_text().strip() == "rank0new"


def test_the_logger_config_passes_the_top_level_resume_policy(tmp_path):
    (tmp_path / RUN_ID_FILE).write_text("oldrun12\n")
    cfg = run_config(["logger=wandb", "logger.wandb.mode=disabled", "resume=never"], tmp_path)
    assert cfg.logger.wandb.resume == "never"
    logger = instantiate(cfg.logger.wandb)
    fresh = (tmp_path / RUN_ID_FILE).read_text().strip()
    assert fresh != "oldrun12" and logger.version == fresh


def report_run_id(save_dir: Path, barrier, ids) -> None:
    # Slow id generation (this forked child only) so that every process has looked for the file before any
    # writes it: the race a busy shared filesystem allows, made certain on a machine with few cores.
    choice = secrets.choice
    secrets.choice = lambda seq: (time.sleep(0.01), choice(seq))[1]
    barrier.wait()  # all processes ask at once, as the ranks of one run do
    ids.put(persistent_run_id(save_dir, resume="auto"))


def test_processes_creating_the_id_at_once_all_get_the_same_id(tmp_path):
    ctx = multiprocessing.get_context("fork")
    processes = 8
    for attempt in range(3):
        save_dir = tmp_path / f"run{attempt}"
        barrier, ids = ctx.Barrier(processes), ctx.Queue()
        workers = [ctx.Process(target=report_run_id, args=(save_dir, barrier, ids)) for _ in range(processes)]
        for worker in workers:
            worker.start()
        got = [ids.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0
        assert set(got) == {(save_dir / RUN_ID_FILE).read_text().strip()}
        assert [p.name for p in save_dir.iterdir()] == [RUN_ID_FILE]


def test_an_empty_id_file_gets_a_real_id(tmp_path):
    (tmp_path / RUN_ID_FILE).write_text("")
    run_id = persistent_run_id(tmp_path)
    assert len(run_id) == 8 and (tmp_path / RUN_ID_FILE).read_text().strip() == run_id


def test_a_filesystem_without_hard_links_still_gets_an_id(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    run_id = persistent_run_id(tmp_path)
    assert len(run_id) == 8 and persistent_run_id(tmp_path) == run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_ID_FILE]


# -- a W&B server that does not answer: an offline cluster node after `wandb login` ---------------------------
def closed_port() -> tuple[str, None]:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{free.getsockname()[1]}", None


def silent_server() -> tuple[str, socket.socket]:
    """Accepts connections (the kernel's backlog) and never answers: a firewall that drops, a hung proxy."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return f"http://127.0.0.1:{server.getsockname()[1]}", server


@pytest.fixture(params=[closed_port, silent_server], ids=["closed port", "silent server"])
def no_server(request, credentials, monkeypatch):
    import wandb

    url, server = request.param()
    monkeypatch.setenv("WANDB_BASE_URL", url)
    wandb.teardown()  # wandb reads its settings (the base URL) once per process
    yield url
    wandb.teardown()
    if server is not None:
        server.close()


def test_auto_mode_logs_offline_in_one_line_where_the_server_does_not_answer(no_server, caplog):
    assert reachable_mode("auto", timeout=1) == "offline"
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and no_server in warnings[0] and "logging offline (logger.wandb.mode=offline)" in warnings[0]


def test_online_mode_stops_in_one_line_naming_offline_where_the_server_does_not_answer(no_server):
    with pytest.raises(ConfigError) as error:
        reachable_mode("online", timeout=1)
    assert error.value.key == "logger.wandb.mode" and no_server in str(error.value)
    assert "logger.wandb.mode=offline" in str(error.value) and "\n" not in str(error.value)


def test_the_logger_config_waits_for_the_server_a_few_seconds_not_wandbs_90(no_server, tmp_path):
    cfg = run_config(["logger=wandb", "logger.wandb.mode=online"], tmp_path)
    assert 0 < cfg.logger.wandb.server_timeout <= 15
    with pytest.raises(InstantiationException) as error:  # train.py unwraps it to the one line
        instantiate(cfg.logger.wandb, server_timeout=1)
    assert isinstance(error.value.__cause__, ConfigError)


# -- metrics.csv ------------------------------------------------------------------------------------------

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
