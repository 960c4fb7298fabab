"""Hydra-side helpers: sweep bookkeeping and DDP children that stay inside their sweep job."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import IO, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from c3exp.errors import run_reporting_user_errors
from c3exp.results import write_json
from c3exp.training import locks
from c3exp.training.locks import acquire, open_lock_file, release, try_flock

log = logging.getLogger(__name__)
SUMMARY_FILE = "sweep_summary.json"
STATUS_FILE = "job_status.json"
GPU_LOCK_DIR = ".gpu_locks"
# (lock directory, GPU index, open lock file) of the GPU this process claimed: the lock lasts as long as the process
_claimed_gpu: tuple[Path, int, IO[str]] | None = None


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def pin_ddp_children_to_this_job() -> None:
    """Make Lightning's DDP relaunch of `sys.argv` (with hydra.run.dir) run this sweep job, not the whole sweep."""
    if not in_multirun():
        return
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def claim_gpu(lock_dir: Path, gpus: int, jobs_per_gpu: int = 1) -> int | None:
    """A GPU slot flocked for this process's life, or None: joblib's job numbers say nothing about which GPUs are busy.
    Each GPU has `jobs_per_gpu` slots, taken GPU by GPU before a second job goes to any GPU."""
    global _claimed_gpu
    lock_dir = Path(lock_dir).resolve()
    if _claimed_gpu is not None and _claimed_gpu[0] != lock_dir:
        _claimed_gpu[2].close()  # a claim from another sweep: give it up
        _claimed_gpu = None
    if _claimed_gpu is None and locks.fcntl is not None:  # not POSIX: GPUs go by job number
        lock_dir.mkdir(parents=True, exist_ok=True)
        for slot, gpu in itertools.product(range(jobs_per_gpu), range(gpus)):
            lock_file = open_lock_file(lock_dir / (f"gpu{gpu}.lock" if slot == 0 else f"gpu{gpu}.{slot}.lock"))
            if try_flock(lock_file):
                _claimed_gpu = (lock_dir, gpu, lock_file)
                break
            lock_file.close()
    return None if _claimed_gpu is None else _claimed_gpu[1]


def assign_gpu_for_parallel_job(cfg: DictConfig) -> None:
    """Under the joblib launcher, put a single-GPU job on a GPU slot no other running job holds (see claim_gpu): with
    hydra.launcher.n_jobs above the GPU count, each GPU runs n_jobs / GPUs (rounded up) jobs side by side."""
    import torch

    if not in_multirun() or "joblib" not in str(HydraConfig.get().launcher.get("_target_", "")):
        return
    gpus, hydra_cfg = torch.cuda.device_count(), HydraConfig.get()
    if gpus < 2 or cfg.trainer.get("accelerator") not in ("gpu", "cuda", "auto") or cfg.trainer.get("devices") != 1:
        return
    # to_absolute_path: with hydra.job.chdir=true a relative sweep dir would resolve inside the job dir
    jobs_per_gpu = -(-int(hydra_cfg.launcher.get("n_jobs") or gpus) // gpus)
    gpu = claim_gpu(Path(to_absolute_path(hydra_cfg.sweep.dir)) / GPU_LOCK_DIR, gpus, jobs_per_gpu)
    if gpu is None and locks.fcntl is not None:
        log.warning("job %s: every slot of the %d GPUs is claimed by other workers (stale locks?); falling back "
                    "to GPU %d = job number mod GPU count, which another job may be using",
                    hydra_cfg.job.num, gpus, hydra_cfg.job.num % gpus)
    with open_dict(cfg):
        cfg.trainer.devices = [hydra_cfg.job.num % gpus if gpu is None else gpu]


class Stopped(SystemExit):
    """SLURM stopped this job; a SystemExit passes `except Exception`: no status is written, and the rerun resumes."""


class JobFailed(CompactHydraException):
    """A sweep job's user error (a bad value): Hydra ends the sweep with this one line, not a traceback."""


def job_failed(err: Exception) -> JobFailed:
    """`err` as the line Hydra prints when it re-raises the sweep's first failure."""
    summary = Path(HydraConfig.get().sweep.dir, SUMMARY_FILE)
    return JobFailed(f"error: job {HydraConfig.get().job.num}: {err} (every job's status: {summary})")


def failure_text(error: BaseException) -> str:
    """What a failed job's status says: the user error behind JobFailed, else the exception."""
    cause = error.__cause__ if isinstance(error, JobFailed) and error.__cause__ else error
    return f"{type(cause).__name__}: {cause}"


class FolderLock(Callback):
    """One process per run/sweep folder (c3exp.training.locks); a refusal exits here, as Hydra would only warn."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_reporting_user_errors(lambda: acquire(Path(config.hydra.run.dir), "hydra.run.dir"))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.sweeper.get("_target_", "")).endswith("OptunaSweeper"):
            return  # the workers of one search share its folder by design; each trial's job holds its own
        run_reporting_user_errors(lambda: acquire(Path(config.hydra.sweep.dir), "hydra.sweep.dir"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.sweep.dir))


class SweepSummary(Callback):
    """Which jobs of a multirun finished and which failed (and why), gathered from each job's own status file."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not in_multirun() or os.environ.get("SLURM_PROCID", "0") != "0":  # DDP over SLURM tasks: rank 0 reports
            return
        job_dir = HydraConfig.get().runtime.output_dir  # job_return.working_dir is the cwd, not the job dir
        failed = job_return.status == JobStatus.FAILED
        status = {"job": HydraConfig.get().job.num, "overrides": list(job_return.overrides or []),
                  "status": "failed" if failed else "completed",
                  "error": failure_text(job_error(job_return)) if failed else None,
                  "primary_metric": OmegaConf.select(config, "task.primary_metric.name"),
                  "best": None if failed else job_return.return_value,  # the best value of the primary metric
                  "run_dir": job_dir, **slurm_job()}
        write_json(Path(job_dir, STATUS_FILE), status)
        if failed:
            log.error("job %s failed (%s): %s", status["job"], " ".join(status["overrides"]), status["error"])
        write_sweep_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Reached when no failure ended the sweep (the Optuna sweeper goes on past a diverged trial)."""
        jobs = write_sweep_summary(Path(config.hydra.sweep.dir))
        failed = sum(job["status"] == "failed" for job in jobs)
        done = (f"{len(jobs) - failed} of {len(jobs)} jobs completed, {failed} failed" if failed
                else f"all {len(jobs)} jobs completed")
        log.info("sweep finished: %s (%s)", done, config.hydra.sweep.dir)


def job_error(job_return: JobReturn) -> BaseException | None:
    """A failed job's exception, re-raised by its public return_value (whose stderr line Hydra's sweeper writes)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            job_return.return_value
    except Exception as err:
        return err
    return None


def slurm_job() -> dict[str, str]:
    """Under SLURM, the job's id and the files its output went to (submitit's logs), for the job's status."""
    if "SLURM_JOB_ID" not in os.environ:
        return {}
    task = f"_{os.environ['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in os.environ else ""
    status = {"slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"]) + task}
    if "SUBMITIT_FOLDER" in os.environ:  # set by submitit in the jobs it runs
        import submitit

        paths = submitit.JobEnvironment().paths
        status.update(stdout=str(paths.stdout), stderr=str(paths.stderr))
    return status


def write_sweep_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Gather the jobs' status files into <sweep dir>/sweep_summary.json (rewritten after every job)."""
    jobs = sorted((json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{STATUS_FILE}")), key=lambda j: j["job"])
    write_json(sweep_dir / SUMMARY_FILE, jobs)
    return jobs
