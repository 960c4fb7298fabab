"""The W&B logger: which mode wins, and when a run directory's W&B id is reused or replaced."""
from __future__ import annotations

import multiprocessing
import os
import secrets
import socket
import time
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from c3exp.errors import ConfigError
from c3exp.training.loggers import RUN_ID_FILE, persistent_run_id, reachable_mode, resolve_mode
from tests.conftest import run_config


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
