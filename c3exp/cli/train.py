"""Train and test one run (or a sweep with -m); only Hydra loads here, so bad values are answered before torch."""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra_plugins.c3exp_optuna import OptunaSweeper
from omegaconf import DictConfig

from c3exp.config import check_command_line, register_resolvers, validate_config
from c3exp.errors import USER_ERRORS, cannot_write, run_reporting_user_errors
from c3exp.paths import config_dir
from c3exp.results import primary_value
from c3exp.training.locks import LOCK_FILE, holding, is_secondary_rank, release_all
from c3exp.training.sweep import JobFailed, Stopped, in_multirun, job_failed
from c3exp.training.tuning import run_as_trial

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# hydra.run.dir of the command line when it was a folder before this process started: never deleted
_existing_run_dirs: set[Path] = set()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Check the values, then import the training stack and run."""
    validate_config(cfg)
    from c3exp.training.train import train as train_and_test

    return train_and_test(cfg)


def run_single(cfg: DictConfig) -> dict[str, Any]:
    """A bad value leaves no run directory behind; SIGTERM or Ctrl-C exits non-zero with the command to resume."""
    with stop_signals_noted() as received:
        try:
            return train(cfg)
        except USER_ERRORS:
            remove_if_unused(Path(cfg.output_dir))
            raise
        except BaseException:
            if received:
                report_stop(Path(cfg.output_dir), received[0])
            raise


def remove_if_unused(run_dir: Path) -> None:
    """Delete a run directory this process created that holds nothing but what Hydra and the lock write at start."""
    unused = {".hydra", "train.log", LOCK_FILE}
    if run_dir.is_dir() and run_dir.resolve() not in _existing_run_dirs and {path.name for path in run_dir.iterdir()} <= unused:
        shutil.rmtree(run_dir)


@contextmanager
def stop_signals_noted() -> Iterator[list[int]]:
    """Note SIGTERM and SIGINT on rank 0 and still stop (SystemExit): Lightning's exit 0 or 1 would hide a kill."""
    received: list[int] = []
    if is_secondary_rank() or threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers belong to the main thread of rank 0
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def note(signum: int, frame: Any) -> None:
        received.append(signum)
        if callable(previous[signum]):
            previous[signum](signum, frame)  # Python's KeyboardInterrupt for SIGINT
        elif signal.getsignal(signum) is note:  # inside fit or test Lightning calls this after its own handler
            raise SystemExit(128 + signum)

    for signum, handler in previous.items():
        if handler != signal.SIG_IGN:  # a run started with nohup or in the background keeps ignoring
            signal.signal(signum, note)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def report_stop(run_dir: Path, signum: int) -> None:
    """Exit 128 + signal number (143 for SIGTERM, 130 for Ctrl-C) saying how far the run got and how to resume it."""
    from c3exp.training.train import newest_good_checkpoint

    found = newest_good_checkpoint(run_dir / "checkpoints")  # where resume=auto continues: the epoch it ends (0-based)
    done = "before the end of epoch 0" if found is None else f"after epoch {found[1]['epoch']}"
    dropped = {"resume"} if found is None else {"resume", "ckpt_path"}  # a ckpt_path would win over that checkpoint
    overrides = [arg for arg in HydraConfig.get().overrides.task if arg.split("=", 1)[0].lstrip("+~") not in dropped]
    command = shlex.join(["python", "-m", "c3exp", *overrides, f"hydra.run.dir={run_dir}", "resume=auto"])
    line = f"stopped by {signal.Signals(signum).name} {done}: resume with: {command}"
    log.warning(line)  # into train.log
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(128 + signum) from None


def run_sweep_job(cfg: DictConfig) -> dict[str, Any]:
    """A user error fails this job in one line (the sweep goes on); one SLURM stops neither fails nor finishes."""
    with stop_signals_noted() as received:
        try:
            with holding(Path(cfg.output_dir), "hydra.sweep.dir"):
                return run_as_trial(lambda: train(cfg))  # inside an Optuna trial: the study is told how it ended
        except USER_ERRORS as err:
            raise job_failed(err) from err
        except Exception as err:
            if signal.SIGTERM in received:  # SLURM's also kills W&B's service: that lost connection is no failure
                message = "stopped by SIGTERM before it finished: a requeued job resumes from its last checkpoint"
                raise Stopped(message) from err
            message = cannot_write(err)  # a full disk or read-only folder fails this job in one line, like a bad value
            if message is not None:
                log.error("error: %s", message)
                raise job_failed(OSError(message)) from err
            raise


register_resolvers()
# An editable install hides hydra_plugins/ from Hydra's plugin scan: name c3exp's sweeper to Hydra here.
Plugins.instance().register(OptunaSweeper)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One run, or one job of a sweep: there an error fails only this job, and the sweep goes on."""
    results = run_sweep_job(cfg) if in_multirun() else run_reporting_user_errors(lambda: run_single(cfg))
    return primary_value(results)  # the objective for hyper-parameter sweepers: the task's primary metric


def note_existing_run_dir(args: list[str]) -> None:
    """Remember a hydra.run.dir given on the command line that exists before Hydra creates it: it is the user's."""
    _existing_run_dirs.clear()
    given = [arg.split("=", 1)[1] for arg in args if arg.split("=", 1)[0].lstrip("+") == "hydra.run.dir"]
    if given and Path(given[-1]).is_dir():
        _existing_run_dirs.add(Path(given[-1]).resolve())


def main(argv: Sequence[str] | None = None) -> None:
    """Hydra's entry on `argv` (default: the command line), which Hydra reads from sys.argv."""
    if argv is not None:
        sys.argv[1:] = argv
    run_reporting_user_errors(lambda: check_command_line(sys.argv[1:]))
    note_existing_run_dir(sys.argv[1:])
    # Hydra re-raises a sweep's first failed job; without this it adds a line asking for HYDRA_FULL_ERROR.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except JobFailed as err:  # a bad value in one job: its one line (it says "error: job N: ...")
        print(err, file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        release_all()
