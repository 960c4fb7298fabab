"""`python -m c3exp [overrides]`: check the command line, then hand one run, or one sweep job, to `train()`.

Only Hydra and OmegaConf are imported here: help, `--cfg`, bad keys and bad values are answered
before torch and Lightning load (seconds of imports), which happens when a run starts its work.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from c3exp.cli import USER_ERRORS, run_reporting_user_errors
from c3exp.config import check_command_line, register_resolvers, validate_config
from c3exp.paths import config_dir
from c3exp.results import primary_value
from c3exp.training.sweep import JobFailed, Stopped, in_multirun, job_failed, sigterm_received, watch_for_sigterm


def train(cfg: DictConfig) -> dict[str, Any]:
    """Check the values, then import the training stack and run."""
    validate_config(cfg)
    from c3exp.train import train as train_and_test

    return train_and_test(cfg)


def run_single(cfg: DictConfig) -> dict[str, Any]:
    """A run that a bad value stops before any work leaves no run directory behind (only Hydra's files)."""
    try:
        return train(cfg)
    except USER_ERRORS:
        remove_if_unused(Path(cfg.output_dir))
        raise


def remove_if_unused(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but what Hydra writes at start (.hydra/, train.log)."""
    if run_dir.is_dir() and {path.name for path in run_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run_dir)


def run_sweep_job(cfg: DictConfig) -> dict[str, Any]:
    """A user error fails this job (the sweep goes on) and, as the sweep's first failure, ends it in one line.

    A job that SLURM stops (preemption, requeue, time limit) neither fails nor finishes: SLURM runs it
    again and it resumes from its last checkpoint.
    """
    watch_for_sigterm()
    try:
        return train(cfg)
    except USER_ERRORS as err:
        raise job_failed(err) from err
    except Exception as err:
        if sigterm_received():
            raise Stopped() from err
        raise


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One run, or one job of a sweep: there an error fails only this job, and the sweep goes on."""
    results = run_sweep_job(cfg) if in_multirun() else run_reporting_user_errors(lambda: run_single(cfg))
    return primary_value(results)  # the objective for hyper-parameter sweepers: the task's primary metric


def main() -> None:
    run_reporting_user_errors(lambda: check_command_line(sys.argv[1:]))
    # Hydra re-raises a sweep's first failed job; without this it adds a line asking for HYDRA_FULL_ERROR.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except JobFailed as err:  # a bad value in one job: its one line (it says "error: job N: ...")
        print(err, file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
