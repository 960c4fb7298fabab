"""One process per run folder and per sweep folder (c3exp/training/locks.py, wired by run.py and sweep.FolderLock)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from c3exp.training.locks import LOCK_FILE, FolderInUse, acquire, exclusive, in_use, release
from tests.conftest import SMALL_DIGITS, run_main

FAST = ["data=digits", "trainer=cpu", "debug=fast", "trainer.enable_progress_bar=false"]


@pytest.fixture
def held_by_another_process():
    """Hold a folder's lock in a helper process for the test's duration; yields a function folder -> its pid."""
    holders: list[subprocess.Popen] = []

    def hold(folder: Path) -> int:
        code = ("import sys; from pathlib import Path; from c3exp.training.locks import acquire\n"
                f"acquire(Path({str(folder)!r}), 'hydra.run.dir'); print('held', flush=True); sys.stdin.read()")
        holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline() == "held\n"
        return holder.pid

    yield hold
    for holder in holders:
        holder.communicate("")  # its stdin closes: it exits


def test_a_folder_in_use_is_refused_naming_the_holder(tmp_path, held_by_another_process):
    pid = held_by_another_process(tmp_path)
    with pytest.raises(FolderInUse, match=rf"^{tmp_path} is in use by pid {pid} on host .+ since .+: wait for it or use "
                                          rf"another hydra.run.dir$"):
        acquire(tmp_path, "hydra.run.dir")


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "slurm_job": "7", "since": "t"}))
    acquire(tmp_path, "hydra.run.dir")
    try:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] != int(dead.stdout)
    finally:
        release(tmp_path)


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"])
def test_ranks_above_zero_share_rank_zeros_folder(monkeypatch, tmp_path, held_by_another_process, variable):
    held_by_another_process(tmp_path)
    monkeypatch.setenv(variable, "1")
    acquire(tmp_path, "hydra.run.dir")  # no refusal, no lock taken


def test_a_second_run_in_a_run_folder_in_use_is_one_line_and_touches_nothing(monkeypatch, capsys, tmp_path,
                                                                             held_by_another_process):
    pid = held_by_another_process(tmp_path)
    code, err = run_main(monkeypatch, capsys, [*FAST, f"hydra.run.dir={tmp_path}"])
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {tmp_path} is in use by pid {pid} "), err
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]  # no .hydra/ or train.log of the refused run


def test_a_second_sweep_in_a_sweep_folder_in_use_is_one_line(monkeypatch, capsys, tmp_path, held_by_another_process):
    pid = held_by_another_process(tmp_path)
    code, err = run_main(monkeypatch, capsys, ["-m", *FAST, "seed=0,1", f"hydra.sweep.dir={tmp_path}"])
    assert code == 2 and err.count("\n") == 1 and f"in use by pid {pid} " in err and "hydra.sweep.dir" in err, err
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_FILE]  # no job ran


def test_a_sweep_releases_its_folders_when_it_ends(monkeypatch, capsys, tmp_path):
    for _ in range(2):  # the second sweep in the same folder, in the same process, is not refused by the first
        code, err = run_main(monkeypatch, capsys, ["-m", *FAST, "model.depth=21", f"hydra.sweep.dir={tmp_path}"])
        assert code == 2 and "model.depth=21 is not valid" in err, err


@pytest.mark.slow
def test_a_second_process_on_a_live_run_dir_exits_2_and_the_first_finishes(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "c3exp", "experiment=quickstart", *SMALL_DIGITS, "trainer.max_epochs=3",
            f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / LOCK_FILE).is_file() or not (run_dir / LOCK_FILE).read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    second = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert second.stderr.startswith(f"error: {run_dir} is in use by pid {first.pid} on host ") and second.stderr.count("\n") == 1
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert results["epochs"] == 3 and {row["epoch"] for row in rows if row.get("train/loss")} == {"0", "1", "2"}


def test_a_symlink_planted_at_the_lock_file_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).symlink_to(victim)
    with pytest.raises(FolderInUse, match="is a symlink"):
        acquire(run_dir, "hydra.run.dir")
    assert victim.read_text() == "precious\n"


def test_in_use_tells_a_live_holder_from_a_dead_one(tmp_path, held_by_another_process):
    """What the Optuna sweeper asks of a trial's run folder and of a worker's lock file."""
    assert not in_use(tmp_path / LOCK_FILE)  # never locked: no file
    held_by_another_process(tmp_path)
    assert in_use(tmp_path / LOCK_FILE)
    other = tmp_path / "other"
    acquire(other, "hydra.run.dir")
    release(other)
    assert (other / LOCK_FILE).exists() and not in_use(other / LOCK_FILE)  # the file stays, the lock is gone


def test_exclusive_holds_its_file_for_the_block_only(tmp_path):
    path = tmp_path / "sub" / "ask.lock"
    with exclusive(path):
        assert in_use(path)
    assert not in_use(path)
