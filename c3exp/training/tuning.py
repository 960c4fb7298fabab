"""c3exp's Optuna sweeper, its study a journal beside the sweep (resumable, shared); optuna imported late for Hydra."""
from __future__ import annotations

import logging
import math
import os
import shlex
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import annotated_types as at
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
from c3exp.schema import PositiveInt, check_settings
from c3exp.training.locks import LOCK_FILE, exclusive, in_use
from c3exp.training.sweep import JobFailed, failure_text, job_error

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
TRIAL_VARIABLE = "C3EXP_OPTUNA_TRIAL"  # hydra.job.env_set: which trial of the study a job runs
BEST_FILE = "optuna_best.json"
WORKERS_DIR = ".optuna-workers"  # one flock per live worker: trials of a dead worker are found by it
ASK_LOCK = "ask.lock"  # held while a worker counts, asks or retries trials


def open_storage(spec: str) -> Any:
    """An Optuna storage: a database URL (`sqlite:///study.db`, `postgresql://...`), else a journal file's path."""
    import optuna

    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))


def distribution(override: Override) -> Any:
    """Optuna's distribution for Hydra's interval(a, b) (tags: log, int), range(a, b[, step]), choice(...) or a,b,c."""
    import optuna.distributions as dist

    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        if "int" in sweep.tags:
            return dist.IntDistribution(int(sweep.start), int(sweep.end), log="log" in sweep.tags)
        return dist.FloatDistribution(float(sweep.start), float(sweep.end), log="log" in sweep.tags)
    if isinstance(sweep, RangeSweep) and isinstance(sweep.start, int) and isinstance(sweep.step, int):
        return dist.IntDistribution(sweep.start, sweep.stop - 1 if sweep.step > 0 else sweep.stop, step=sweep.step)
    if isinstance(sweep, ChoiceSweep) or override.is_sweep_override():
        return dist.CategoricalDistribution(list(override.sweep_string_iterator()))
    raise ConfigError(f"hydra.sweeper.params.{override.key_or_group}", override.input_line,
                      "interval(a, b), range(a, b), choice(...) or a,b,c")


def search_space(params: Mapping[str, str] | None, arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The distributions to search (hydra.sweeper.params, then sweeps on the command line) and the fixed overrides."""
    parser = OverridesParser.create()
    space = {key: distribution(parser.parse_override(f"{key}={value}")) for key, value in (params or {}).items()}
    overrides = parser.parse_overrides(list(arguments))
    space.update({found.key_or_group: distribution(found) for found in overrides if found.is_sweep_override()})
    return space, [found.input_line for found in overrides if not found.is_sweep_override()]


def trial_overrides(trial: optuna.trial.FrozenTrial | optuna.Trial, subdir: str) -> list[str]:
    """A trial's job: its parameters (a choice's text as written: `[1]` of attn.stages=[1],[4]), folder and number."""
    values = [f"{key}={value}" for key, value in trial.params.items()]
    return [*values, f"hydra.sweep.subdir={subdir}", f"+hydra.job.env_set.{TRIAL_VARIABLE}={trial.number}"]


class OptunaSweeper(Sweeper):
    """`hparams_search=optuna`: ask trials, launch each as a job, until the study holds n_trials finished trials."""

    def __init__(self, study_name: str, storage: str, direction: Literal["maximize", "minimize"], n_trials: PositiveInt,
                 n_jobs: Annotated[int, at.Ge(1), "trials launched at once"], sampler: Callable[..., Any],
                 pruner: Any = None, params: Mapping[str, str] | None = None):
        check_settings(dict(direction=direction, n_trials=n_trials, n_jobs=n_jobs), OptunaSweeper, "hydra.sweeper.")
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler, self.pruner, self.params = sampler, pruner, params

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space(self.params, arguments)
        check(bool(space), "hydra.sweeper.params", dict(self.params or {}), "at least one parameter to search")
        with worker_lock(self.sweep_dir) as (worker, others):
            study = self.open_study(others)
            while trials := self.ask(study, space, worker):
                self.run(study, trials, fixed)
        report_best(study, fixed, self.sweep_dir)

    def open_study(self, other_workers: int) -> optuna.Study:
        """The study, created or continued; the sampler's seed moves on with trials and workers (no repeated points)."""
        import optuna

        study = optuna.create_study(storage=open_storage(self.storage), study_name=self.study_name,
                                    direction=self.direction, pruner=self.pruner, load_if_exists=True)
        seed = getattr(self.sampler, "keywords", {}).get("seed")
        offset = {"seed": seed + len(study.trials) + 1000 * other_workers} if seed is not None else {}
        study.sampler = self.sampler(**offset)
        log.info("Optuna study %s in %s: %d trials so far, %d to finish", self.study_name, self.storage,
                 len(study.trials), self.n_trials)
        return study

    def ask(self, study: optuna.Study, space: dict[str, Any], worker: str) -> list[optuna.Trial]:
        """Dead workers' trials asked again, then up to n_jobs new while finished and running stay below n_trials."""
        import optuna

        taken = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        with exclusive(self.sweep_dir / WORKERS_DIR / ASK_LOCK):
            retry_dead_trials(study, self.sweep_dir)
            count = len(study.get_trials(deepcopy=False, states=taken))
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - count))]
            for trial in trials:
                trial.set_user_attr("worker", worker)
                trial.set_user_attr("subdir", trial.user_attrs.get("subdir") or f"trial{trial.number}")
        return trials

    def run(self, study: optuna.Study, trials: list[optuna.Trial], fixed: list[str]) -> None:
        """Launch the trials' jobs, failing one killed untold; a user error ends the search (every trial would fail)."""
        import optuna

        jobs = [[*fixed, *trial_overrides(trial, trial.user_attrs["subdir"])] for trial in trials]
        for trial, job in zip(trials, self.launcher.launch(jobs, initial_job_idx=trials[0].number)):
            if study.get_trials(deepcopy=False)[trial.number].state == optuna.trial.TrialState.RUNNING:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            error = job_error(job) if job.status == JobStatus.FAILED else None
            if isinstance(error, JobFailed) and not isinstance(error.__cause__, (NonFiniteLossError, FolderInUse)):
                raise error
            if error is not None:  # a diverged or locked-out trial fails alone
                log.warning("trial %d failed: %s", trial.number, failure_text(error))


@contextmanager
def worker_lock(sweep_dir: Path) -> Iterator[tuple[str, int]]:
    """This worker's id (host-pid) and how many other workers of the study are alive, for as long as it runs."""
    folder = sweep_dir / WORKERS_DIR
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
        alive = worker is None or in_use(sweep_dir / WORKERS_DIR / f"{worker}.worker")
        if alive or (subdir and in_use(sweep_dir / subdir / LOCK_FILE)):
            continue
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"subdir": subdir, "retry_of": trial.number})
        log.warning("trial %d was left running by a sweep that stopped: asked again as a new trial in %s",
                    trial.number, subdir)


def best_command(params: Mapping[str, Any], fixed: Sequence[str]) -> str:
    """The command that trains the best trial's configuration as one run, without the search's own settings."""
    kept = [arg for arg in fixed if not arg.lstrip("+~").startswith(("hparams_search=", "hydra.", "hydra/"))]
    return shlex.join(["python", "-m", "c3exp", *kept, *(f"{key}={value}" for key, value in params.items())])


def report_best(study: optuna.Study, fixed: Sequence[str], sweep_dir: Path) -> None:
    """<sweep dir>/optuna_best.json and a line with the best trial's command; every trial's state counted."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    if not counts["complete"]:
        log.warning("no trial of study %s completed (%s)", study.study_name, counts)
        return
    best = study.best_trial
    summary = {"study": study.study_name, "direction": study.direction.name.lower(), "best_value": best.value,
               "best_params": best.params, "best_trial": best.number,
               "run_dir": str(sweep_dir / best.user_attrs.get("subdir", "")),
               "command": best_command(best.params, fixed), "trials": counts}
    write_json(sweep_dir / BEST_FILE, summary)
    print(f"best trial {best.number} ({best.value:.6g}): {summary['command']}", flush=True)


def current_trial() -> tuple[optuna.Study, optuna.Trial] | None:
    """The study and trial this sweep job runs, or None outside c3exp's Optuna sweeper."""
    import optuna

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    number = hydra.job.env_set.get(TRIAL_VARIABLE) if hydra else None
    if number is None or not str(hydra.sweeper.get("_target_", "")).endswith(OptunaSweeper.__name__):
        return None
    pruner = instantiate(hydra.sweeper.pruner) if hydra.sweeper.get("pruner") else None
    storage = open_storage(hydra.sweeper.storage)  # kept: the study's own storage object is not public
    study = optuna.load_study(study_name=hydra.sweeper.study_name, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(study.study_name)
    return study, optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, int(number)))


def run_as_trial(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A sweep job telling its trial how it ended: a stop nothing (its requeue goes on), a divergence pruned."""
    found = current_trial()
    if found is None:
        return run()
    import optuna

    study, trial = found
    state = optuna.trial.TrialState
    try:
        results = run()
    except optuna.TrialPruned:
        study.tell(trial.number, state=state.PRUNED, skip_if_finished=True)
        log.info("trial %d pruned", trial.number)
        return {"pruned": True}
    except NonFiniteLossError:
        trial.set_user_attr("diverged", True)
        study.tell(trial.number, state=state.PRUNED, skip_if_finished=True)
        raise
    except Exception:
        study.tell(trial.number, state=state.FAIL, skip_if_finished=True)
        raise
    value = primary_value(results)
    finite = value is not None and math.isfinite(value)
    study.tell(trial.number, value if finite else None, state=None if finite else state.FAIL, skip_if_finished=True)
    return results
