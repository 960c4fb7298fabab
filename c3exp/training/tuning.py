"""Hyper-parameter search: an Optuna sweeper of c3exp's own (hydra-optuna-sweeper pins optuna<3 and keeps no study),
its study a journal file beside the sweep, so the same command continues it and other machines share it. Each job tells
its own outcome. Optuna is imported inside the functions: Hydra imports this module at every start."""
from __future__ import annotations

import logging
import math
import os
import shlex
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig

from c3exp.errors import ConfigError, FolderInUse, NonFiniteLossError, check
from c3exp.results import primary_value, write_json
from c3exp.training.locks import LOCK_FILE, exclusive, in_use

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
TRIAL_VARIABLE = "C3EXP_OPTUNA_TRIAL"  # hydra.job.env_set: which trial of the study a job runs
BEST_FILE = "optuna_best.json"
WORKERS_DIR = ".optuna-workers"  # one flock per live worker: trials of a dead worker are found by it
ASK_LOCK = "ask.lock"  # held while a worker counts, asks or retries trials


# -- the study -------------------------------------------------------------------------------------
def open_storage(spec: str) -> Any:
    """An Optuna storage: a database URL (`sqlite:///study.db`, `postgresql://...`), else a journal file's path."""
    import optuna

    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))


def load_study(storage: str, study_name: str, direction: str | None = None, **kwargs: Any) -> optuna.Study:
    """The study, created on first use when `direction` is given."""
    import optuna

    if direction is None:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage), **kwargs)
    return optuna.create_study(study_name=study_name, storage=open_storage(storage), direction=direction,
                               load_if_exists=True, **kwargs)


def distribution(override: Override) -> Any:
    """Optuna's distribution for Hydra's interval(a, b) (tags: log, int), range(a, b[, step]), choice(...) or a,b,c."""
    import optuna.distributions as dist

    sweep, key = override.value(), override.key_or_group
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in sweep.tags
        if "int" in sweep.tags:
            return dist.IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
        return dist.FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
    if isinstance(sweep, RangeSweep) and isinstance(sweep.start, int) and isinstance(sweep.step, int):
        return dist.IntDistribution(sweep.start, sweep.stop - 1 if sweep.step > 0 else sweep.stop, step=sweep.step)
    if isinstance(sweep, ChoiceSweep) or override.is_sweep_override():
        return dist.CategoricalDistribution(list(override.sweep_string_iterator()))
    raise ConfigError(f"hydra.sweeper.params.{key}", override.input_line, "interval(a, b), range(a, b), choice(...) or a,b,c")


def search_space(params: Mapping[str, str] | None, arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The distributions to search (hydra.sweeper.params, then sweeps on the command line) and the fixed overrides."""
    parser = OverridesParser.create()
    space = {key: distribution(parser.parse_override(f"{key}={value}")) for key, value in (params or {}).items()}
    fixed = []
    for override in parser.parse_overrides(list(arguments)):
        if override.is_sweep_override():
            space[override.key_or_group] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def trial_overrides(trial: optuna.trial.FrozenTrial | optuna.Trial, subdir: str) -> list[str]:
    """A trial's job: its parameters (a choice's text as written: `[1]` of attn.stages=[1],[4]), folder and number."""
    values = [f"{key}={value}" for key, value in trial.params.items()]
    return [*values, f"hydra.sweep.subdir={subdir}", f"+hydra.job.env_set.{TRIAL_VARIABLE}={trial.number}"]


class OptunaSweeper(Sweeper):
    """`hparams_search=optuna`: ask trials, launch each as a job, until the study holds n_trials finished trials."""

    def __init__(self, study_name: str, storage: str, direction: str, n_trials: int, n_jobs: int,
                 sampler: Callable[..., Any], pruner: Any = None, params: Mapping[str, str] | None = None):
        check(n_trials >= 1, "hydra.sweeper.n_trials", n_trials, "an integer >= 1")
        check(n_jobs >= 1, "hydra.sweeper.n_jobs", n_jobs, "an integer >= 1 (trials launched at once)")
        check(direction in ("maximize", "minimize"), "hydra.sweeper.direction", direction, ["maximize", "minimize"])
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler, self.pruner, self.params = sampler, pruner, params
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None
        space, fixed = search_space(self.params, arguments)
        check(bool(space), "hydra.sweeper.params", dict(self.params or {}), "at least one parameter to search")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        with worker_lock(sweep_dir) as (worker, others):
            study = self.open_study(others)
            with exclusive(sweep_dir / WORKERS_DIR / ASK_LOCK):  # two workers starting together retry a trial once
                retry_dead_trials(study, sweep_dir)
            while trials := self.ask(study, space, worker, sweep_dir):
                self.run(study, trials, fixed)
        report_best(study, fixed, sweep_dir)

    def open_study(self, other_workers: int) -> optuna.Study:
        """The study, created or continued; the sampler's seed moves on with its trials and workers (no repeated points)."""
        study = load_study(self.storage, self.study_name, self.direction, pruner=self.pruner)
        seed = getattr(self.sampler, "keywords", {}).get("seed")
        offset = {"seed": seed + len(study.trials) + 1000 * other_workers} if seed is not None else {}
        study.sampler = self.sampler(**offset)
        log.info("Optuna study %s in %s: %d trials so far, %d to finish", self.study_name, self.storage,
                 len(study.trials), self.n_trials)
        return study

    def ask(self, study: optuna.Study, space: dict[str, Any], worker: str, sweep_dir: Path) -> list[optuna.Trial]:
        """Up to n_jobs new trials while finished and running ones stay below n_trials (counted under a lock)."""
        import optuna

        taken = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        with exclusive(sweep_dir / WORKERS_DIR / ASK_LOCK):
            count = len(study.get_trials(deepcopy=False, states=taken))
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - count))]
            for trial in trials:
                trial.set_user_attr("worker", worker)
                trial.set_user_attr("subdir", trial.user_attrs.get("subdir") or f"trial{trial.number}")
        return trials

    def run(self, study: optuna.Study, trials: list[optuna.Trial], fixed: list[str]) -> None:
        """Launch the trials' jobs; one that ended without telling its outcome (killed) is failed here. A user error
        ends the search in its one line (every trial would fail alike); a diverged or locked-out trial fails alone."""
        import optuna

        from c3exp.training.sweep import JobFailed

        jobs = [[*fixed, *trial_overrides(trial, trial.user_attrs["subdir"])] for trial in trials]
        returns = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
        everyone = study.get_trials(deepcopy=False)
        for trial, job in zip(trials, returns):
            if everyone[trial.number].state == optuna.trial.TrialState.RUNNING:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            if job.status == JobStatus.FAILED:
                try:
                    job.return_value  # re-raises the job's exception
                except JobFailed as err:
                    if not isinstance(err.__cause__, (NonFiniteLossError, FolderInUse)):
                        raise
                    log.warning("trial %d: %s", trial.number, err.__cause__)
                except Exception as err:
                    log.warning("trial %d failed: %s: %s", trial.number, type(err).__name__, err)


@contextmanager
def worker_lock(sweep_dir: Path) -> Iterator[tuple[str, int]]:
    """This worker's id (host-pid) and how many other workers of the study are alive, for as long as it runs."""
    folder = sweep_dir / WORKERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    worker = f"{socket.gethostname()}-{os.getpid()}"
    others = sum(in_use(path) for path in folder.glob("*.worker"))
    with exclusive(folder / f"{worker}.worker"):
        yield worker, others
    (folder / f"{worker}.worker").unlink(missing_ok=True)


def retry_dead_trials(study: optuna.Study, sweep_dir: Path) -> None:
    """Fail each running trial whose worker and job (its folder's lock) are both gone; ask it again in its folder."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker, subdir = trial.user_attrs.get("worker"), trial.user_attrs.get("subdir")
        if worker is None or in_use(sweep_dir / WORKERS_DIR / f"{worker}.worker") or (subdir and in_use(sweep_dir / subdir / LOCK_FILE)):
            continue
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"subdir": subdir, "retry_of": trial.number})
        log.warning("trial %d was left running by a sweep that stopped: asked again as a new trial in %s", trial.number, subdir)


def best_command(params: Mapping[str, Any], fixed: Sequence[str]) -> str:
    """The command that trains the best trial's configuration as one run, without the search's own settings."""
    kept = [arg for arg in fixed if not arg.lstrip("+~").startswith(("hparams_search=", "hydra.", "hydra/"))]
    values = [f"{key}={value}" for key, value in params.items()]
    return shlex.join(["python", "-m", "c3exp", *kept, *values])


def report_best(study: optuna.Study, fixed: Sequence[str], sweep_dir: Path) -> None:
    """<sweep dir>/optuna_best.json and a line with the best trial's command; every trial's state counted."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        log.warning("no trial of study %s completed (%s)", study.study_name, counts)
        return
    best = study.best_trial
    summary = {
        "study": study.study_name, "direction": study.direction.name.lower(), "best_value": best.value,
        "best_params": best.params, "best_trial": best.number, "run_dir": str(sweep_dir / best.user_attrs.get("subdir", "")),
        "command": best_command(best.params, fixed), "trials": counts,
    }
    write_json(sweep_dir / BEST_FILE, summary)
    log.info("best trial %d: %s; train it: %s", best.number, best.value, summary["command"])
    print(f"best trial {best.number} ({best.value:.6g}): {summary['command']}", flush=True)


# -- the job side of a trial ---------------------------------------------------------------------
def current_trial() -> tuple[optuna.Study, optuna.Trial] | None:
    """The study and trial this sweep job runs, or None outside c3exp's Optuna sweeper."""
    import optuna

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    number = hydra.job.env_set.get(TRIAL_VARIABLE)
    if number is None or not str(hydra.sweeper.get("_target_", "")).endswith(OptunaSweeper.__name__):
        return None
    pruner = instantiate(hydra.sweeper.pruner) if hydra.sweeper.get("pruner") else None
    storage = open_storage(hydra.sweeper.storage)  # kept: the study's own storage object is not public
    study = optuna.load_study(study_name=hydra.sweeper.study_name, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), int(number))
    return study, optuna.Trial(study, trial_id)


def run_as_trial(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a sweep job; inside an Optuna trial, tell the study how it ended. A job stopped by SIGTERM or Ctrl-C tells
    nothing (its requeue goes on); a diverged one is told pruned, so the sampler ranks it below every finished trial."""
    found = current_trial()
    if found is None:
        return run()
    import optuna

    study, trial = found
    try:
        results = run()
    except optuna.TrialPruned:
        study.tell(trial.number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        log.info("trial %d pruned", trial.number)
        return {"pruned": True}
    except NonFiniteLossError:
        trial.set_user_attr("diverged", True)
        study.tell(trial.number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        raise
    except Exception:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        raise
    value = primary_value(results)
    study.tell(trial.number, value, skip_if_finished=True) if value is not None and math.isfinite(value) else \
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return results
