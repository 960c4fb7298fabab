"""Parallel (joblib/loky) sweep jobs: each worker process holds one GPU, whatever its job numbers."""
from __future__ import annotations

import fcntl
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from c3exp.training import sweep

REPO = Path(__file__).resolve().parents[1]
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
