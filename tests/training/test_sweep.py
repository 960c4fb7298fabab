"""Sweeps (c3exp/training/sweep.py): DDP on CPU inside one job, multirun with W&B offline, a failing job reported,
the launchers, Optuna, and parallel jobs that each hold one GPU."""
from __future__ import annotations

import fcntl
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.cli.eval import evaluate
from c3exp.training import sweep
from tests.conftest import REPO, SMALL_DIGITS as SMALL, assert_names_bad_setting, c3exp_cli
from tests.wandb_records import read_offline_run


@pytest.mark.slow
def test_ddp_on_cpu_makes_one_run_dir_with_correct_metrics(tmp_path):
    run_dir = tmp_path / "run"
    done = c3exp_cli(["trainer=ddp_sim", *SMALL, "trainer.max_epochs=1", "data.val_split=180",
                      "trainer.limit_val_batches=null", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no per-rank directories anywhere
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 1
    # 4 steps of the global batch 32, split 16 + 16 over the 2 processes
    first = results["history"][0]
    assert first["train/images_per_sec"] == pytest.approx(4 * 32 / first["train/epoch_time"])
    # the synchronised validation accuracy over both processes' halves matches a single-process evaluation
    single = evaluate(results["checkpoints"]["last"], ["trainer.accelerator=cpu"])
    # both see the same 64 test images (2 batches of 32; in DDP 2 x 16 per rank, interleaved): at most
    # one prediction may flip from float differences between batch sizes
    assert single["test/acc1"] == pytest.approx(results["test_acc1"], abs=1 / 64 + 1e-6)


@pytest.mark.slow
def test_multirun_with_wandb_offline_makes_one_wandb_run_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = c3exp_cli(["-m", "model=resnet20,resnet32", "attn=none,c3", "logger=wandb", *SMALL,
                      "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    job_dirs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(job_dirs) == 4
    ids = set()
    for job_dir in job_dirs:
        results = json.loads((job_dir / "results.json").read_text())
        run = read_offline_run(job_dir)
        ids.add(run["id"])
        assert run["group"] == f"{sweep.name}/{results['model']}-{results['attn']}-digits"
        logged = [row["val/acc1"] for row in run["history"] if "val/acc1" in row]
        assert logged == pytest.approx([row["val/acc1"] for row in results["history"]])
        assert any("model/params" in row for row in run["history"])
    assert len(ids) == 4
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["completed"] * 4


@pytest.mark.slow
def test_a_failing_sweep_job_is_reported_and_the_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    done = c3exp_cli(["-m", "model.depth=20,21", *SMALL, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert done.returncode != 0
    summary = {job["job"]: job for job in json.loads((sweep / "sweep_summary.json").read_text())}
    assert summary[0]["status"] == "completed" and summary[1]["status"] == "failed"
    assert summary[1]["error"].startswith("ConfigError: model.depth=21 is not valid")
    assert len(list(sweep.glob("*/results.json"))) == 1
    # the sweep ends on the first failure's one line, not a traceback
    assert "Traceback" not in done.stderr
    line = next(line for line in done.stderr.splitlines() if "error: job 1: " in line)
    assert_names_bad_setting(line, "model.depth", 21)
    assert "6k+2" in line
    assert f"(every job's status: {sweep}/sweep_summary.json)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["submitit_local", "parallel"])
def test_launcher_runs_a_two_job_sweep(tmp_path, launcher: str):
    """submitit's local executor stands in for SLURM; `parallel` is joblib, jobs side by side."""
    sweep = tmp_path / "sweep"
    done = c3exp_cli(["-m", f"hydra/launcher={launcher}", "seed=0,1", *SMALL, "trainer.max_epochs=1",
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    seeds = sorted(json.loads(p.read_text())["seed"] for p in sweep.glob("*/results.json"))
    assert seeds == [0, 1]


# ----------------------------------------------------------------------------------------------
# Parallel (joblib/loky) sweep jobs: each worker process holds one GPU, whatever its job numbers.


# A stand-in for a loky worker: claims a GPU once told to go, prints it, exits (dropping its lock).
# It skips the c3exp package __init__s (torch, Lightning: seconds to import), which sweep.py does not need.
CHILD = """
import sys, types
from pathlib import Path
for name in ("c3exp", "c3exp.training"):
    sys.modules[name] = package = types.ModuleType(name)
    package.__path__ = [str(Path(sys.argv[2], *name.split(".")))]
from c3exp.training.sweep import claim_gpu
sys.stdin.readline()
print(claim_gpu(Path(sys.argv[1]), 2))
"""


@pytest.fixture(autouse=True)
def no_claimed_gpu():
    """The claim lives in a module global for the process' life; keep it from leaking between tests."""

    def release():
        if getattr(sweep, "_claimed_gpu", None) is not None:
            sweep._claimed_gpu[2].close()
            sweep._claimed_gpu = None

    release()
    yield
    release()


def hold(lock_dir: Path, *gpus: int) -> list:
    """Lock GPUs through open files of our own, as other workers would (flock is per open file)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    files = [open(lock_dir / f"gpu{gpu}.lock", "a") for gpu in gpus]
    for f in files:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return files


def start_child(lock_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(lock_dir), str(REPO)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def child_claim(child: subprocess.Popen) -> str:
    out, err = child.communicate("go\n", timeout=60)
    assert child.returncode == 0, err
    return out.strip()


def test_each_worker_keeps_one_gpu_and_frees_it_on_exit(tmp_path):
    locks = tmp_path / ".gpu_locks"
    assert sweep.claim_gpu(locks, 2) == 0
    # Both children import (the slow part) side by side; each claims only when told to.
    first, second = start_child(locks), start_child(locks)
    try:
        assert child_claim(first) == "1"  # GPU 0 is ours, so the other worker gets GPU 1
        assert sweep.claim_gpu(locks, 2) == 0  # a later job in this worker keeps its GPU
        assert child_claim(second) == "1"  # the first child exited, and its GPU with it
    finally:
        for child in (first, second):
            if child.poll() is None:
                child.kill()
                child.communicate()


def test_all_gpus_taken_gives_none(tmp_path):
    held = hold(tmp_path, 0, 1)
    try:
        assert sweep.claim_gpu(tmp_path, 2) is None
        assert sweep._claimed_gpu is None
    finally:
        for f in held:
            f.close()
    assert sweep.claim_gpu(tmp_path, 2) == 0  # free again once the holders let go


def test_packed_jobs_fill_every_gpu_before_sharing_one(tmp_path):
    """n_jobs = 2 x GPUs: slots go GPU 0, GPU 1, then GPU 0 again, as files other workers hold show."""
    held = hold(tmp_path, 0, 1)
    try:
        assert sweep.claim_gpu(tmp_path, 2, jobs_per_gpu=1) is None  # one job per GPU: both taken
        assert sweep.claim_gpu(tmp_path, 2, jobs_per_gpu=2) == 0  # a second slot of GPU 0
        with open(tmp_path / "gpu0.1.lock", "a") as slot, pytest.raises(BlockingIOError):
            fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for this process's life
    finally:
        for f in held:
            f.close()


def test_parallel_jobs_above_the_gpu_count_share_the_gpus(parallel_job, tmp_path):
    held = hold(tmp_path / sweep.GPU_LOCK_DIR, 0, 1)  # jobs 0 and 1 run on GPUs 0 and 1
    try:
        sweep.HydraConfig.get().launcher.n_jobs = 4
        sweep.assign_gpu_for_parallel_job(parallel_job)  # job 2: the second slot of GPU 0
        assert list(parallel_job.trainer.devices) == [0]
        with open(tmp_path / sweep.GPU_LOCK_DIR / "gpu0.1.lock", "a") as slot, pytest.raises(BlockingIOError):
            fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        for f in held:
            f.close()


def test_claim_for_another_sweep_dir_drops_the_old_lock(tmp_path):
    assert sweep.claim_gpu(tmp_path / "a", 2) == 0
    assert sweep.claim_gpu(tmp_path / "b", 2) == 0
    hold(tmp_path / "a", 0)[0].close()  # would raise BlockingIOError if sweep a's GPU 0 were still held


@pytest.fixture
def parallel_job(monkeypatch, tmp_path):
    """Job 2 of a joblib multirun on a 2-GPU machine, as assign_gpu_for_parallel_job sees it; returns its cfg."""
    launcher = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    hydra_cfg = OmegaConf.create({"launcher": {"_target_": launcher}, "sweep": {"dir": str(tmp_path)}, "job": {"num": 2}})
    monkeypatch.setattr(sweep, "in_multirun", lambda: True)
    monkeypatch.setattr(sweep.HydraConfig, "get", staticmethod(lambda: hydra_cfg))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}})


def test_parallel_job_goes_to_the_free_gpu_not_job_num_mod_gpus(parallel_job, tmp_path):
    held = hold(tmp_path / sweep.GPU_LOCK_DIR, 0)  # job 0 still runs on GPU 0 in another worker
    try:
        sweep.assign_gpu_for_parallel_job(parallel_job)  # job 2: 2 % 2 would be GPU 0, taken
        assert list(parallel_job.trainer.devices) == [1]
    finally:
        held[0].close()


def test_no_free_gpu_falls_back_to_job_num_mod_gpus_with_a_warning(parallel_job, tmp_path, caplog):
    held = hold(tmp_path / sweep.GPU_LOCK_DIR, 0, 1)  # e.g. n_jobs set above the GPU count
    try:
        with caplog.at_level(logging.WARNING, logger=sweep.log.name):
            sweep.assign_gpu_for_parallel_job(parallel_job)
    finally:
        for f in held:
            f.close()
    assert list(parallel_job.trainer.devices) == [0]
    assert "falling back" in caplog.text
