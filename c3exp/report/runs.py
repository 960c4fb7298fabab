"""The Run record a report is made of, read from results.json files (and the configs beside them) or from W&B."""
from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from c3exp.config import KEY_CHOICES
from c3exp.errors import ConfigError, check, is_number
from c3exp.results import RESULTS_FILE, PrimaryMetric, hydra_config
from c3exp.utils.mappings import config_value, flatten

DEFAULT_TASK = "classification"  # results.json files from before tasks are classification runs
SETTING_KEYS = ("optim", "max_epochs", "batch_size", "lr", "placement")  # the recipe of a run without a saved config
NOT_METRICS = ("loss", "ckpt")  # test_<name> keys of results.json that are not metrics in 0..1 (test_ckpt: a setting)
# Config keys that cannot change a run's numbers ('*': any part; a key covers those below): seeds pool across them.
SEED_KEYS = ("seed", "data.seed", "callbacks.epoch_seed.seed")  # the seed, and where the config copies it
NON_RESULT_KEYS = (
    *SEED_KEYS,
    "task_name", "run_name", "output_dir", "hydra", "_wandb", "trainer.default_root_dir",  # names and places
    "logger", "callbacks.*.dirpath", "callbacks.*.filename", "callbacks.channel_correlation",  # what is recorded
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps", "ckpt_path", "resume",  # a resumed run ends as an uninterrupted one (README)
    "trainer.accelerator", "trainer.devices", "trainer.strategy",  # data.batch_size is the global batch (README)
    "trainer.benchmark", "trainer.deterministic", "keep_freed_memory", "bench",  # speed and reproducibility
    "data.num_workers", "data.on_device", "task.channels_last", "task.compile", "task.cuda_graphs",
    "model.channels_last", "model.compile",  # the same draws and network (model.*: runs before the speed options moved)
    "attn._target_",  # the class attn.name names: runs from before attn groups named it pool with later ones
)
# Settings that mark a debug run (conf/debug/*); not limit_*_batches: it also makes legitimate small runs.
DEBUG_KEYS = ("trainer.fast_dev_run", "trainer.overfit_batches")
WANDB_TEST_KEY = re.compile(r"(?:final/test_|test/)(\w+)")  # a test number in a W&B summary
PROJECT_PATH = re.compile(r"[\w.-]+/[\w.-]+")  # ENTITY/PROJECT


@dataclass(frozen=True)
class Run:
    """What a report needs from one run, whether read from results.json or from W&B."""

    task: str
    primary: PrimaryMetric
    model: str
    attn: str
    data: str
    seed: int | None
    params: int | None
    macs: int | None
    test_metrics: Mapping[str, float]  # metric -> its test value, a fraction: {"acc1": 0.71, "acc5": 0.92}
    curve: tuple[tuple[int, float], ...]  # (0-based epoch, the primary validation metric, a fraction)
    source: str
    debug: str | None = None  # the debug setting the run was made with (debug_marker), else None
    finished: float | None = None  # when it finished (POSIX seconds): the newest run of a seed is kept
    recipe: tuple[tuple[str, str], ...] = ()  # (dotted key, JSON value) of each setting that counts (recipe_of)
    epochs: int | None = None  # training epochs it ran (results.json's `epochs`); None where the source does not say
    experiment: str | None = None  # the experiment config it was composed with (experiment_of); None: not recorded


class UnusableRun(ValueError):
    """Why one run cannot be reported (a damaged file, a wrong type, no result): it is skipped, the report goes on."""


def is_finite(value: Any) -> bool:
    """A real number, not a bool, NaN or infinite: the only kind a mean over seeds can use."""
    return is_number(value) and math.isfinite(value)


def is_name(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def shown(value: Any, limit: int = 40) -> str:
    """A value as JSON, cut short: what an error line quotes from a file."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def typed(record: Mapping[str, Any], key: str, accepts: Callable[[Any], bool], expected: str,
          required: bool = False, label: str | None = None) -> Any:
    """record[key] if `accepts` takes it; absent or null: None (unless required); else UnusableRun naming the key."""
    value = record.get(key)
    if value is None and not required:
        return None
    if not accepts(value):
        raise UnusableRun(f"{label or key} is {'missing' if key not in record else shown(value)}, not {expected}")
    return value


def whole(record: Mapping[str, Any], key: str, **kwargs: Any) -> int | None:
    """An epoch, seed or count as an int (W&B may hand back 3.0 for 3)."""
    value = typed(record, key, lambda value: is_finite(value) and float(value).is_integer(), "a whole number", **kwargs)
    return None if value is None else int(value)


def primary_metric(value: Any) -> PrimaryMetric:
    try:
        return PrimaryMetric.of(value)
    except (TypeError, ValueError) as error:  # ConfigError is a ValueError: a name without val/, a bad mode
        raise UnusableRun(f"primary_metric is {shown(value)}, not a primary metric ({error})") from None


def run_from_results(results: Mapping[str, Any], source: str, config: Mapping[str, Any] | None = None,
                     finished: float | None = None, experiment: str | None = None) -> Run:
    """`config`: the run's composed config, where its debug settings are; UnusableRun names a field of a wrong type."""
    primary, config = primary_metric(results.get("primary_metric")), config or {}
    task = typed(results, "task", is_name, "a task name") or DEFAULT_TASK
    model, attn, data = (typed(results, key, is_name, f"{kind} name", required=True)
                         for key, kind in (("model", "a model"), ("attn", "an attention"), ("data", "a data")))
    return Run(task, primary, model, attn, data, seed=whole(results, "seed"),
               params=typed(results, "params", is_finite, "a number"),
               macs=typed(results, "macs", is_finite, "a number"),
               test_metrics=test_metrics(results), curve=validation_curve(results, primary), source=source,
               debug=debug_marker(config) or debug_marker(results),  # the saved config says which debug setting
               finished=finished, recipe=recipe_of(config, results), epochs=whole(results, "epochs"),
               experiment=experiment)


def usable(build: Callable[[], Run | None], name: str) -> Run | None:
    """build()'s run if it has a trained epoch and a primary metric's test value, else None and a line on stderr."""
    try:
        run = build()
        if run is not None and run.epochs == 0:
            raise UnusableRun("no trained epoch (epochs: 0), so no result to report")
        if run is not None and run.primary.metric not in run.test_metrics:
            raise UnusableRun(f"no test_{run.primary.metric} (its primary metric), so no result to report")
        return run
    except UnusableRun as error:
        print(f"skipped {name}: {error}", file=sys.stderr)
        return None


def validation_curve(results: Mapping[str, Any], primary: PrimaryMetric) -> tuple[tuple[int, float], ...]:
    """(epoch, primary validation metric) of each history row that has it: epochs without validation have none."""
    history = typed(results, "history", lambda rows: isinstance(rows, list)
                    and all(isinstance(row, Mapping) for row in rows), "a list of objects") or []
    points = [(row, typed(row, primary.name, is_finite, "a number", label=f"history[{index}].{primary.name}"))
              for index, row in enumerate(history)]
    return tuple((whole(row, "epoch", required=True, label=f"history[{index}].epoch"), float(value))
                 for index, (row, value) in enumerate(points) if value is not None)


def test_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """Every test_<metric> but NOT_METRICS; one not finite is UnusableRun: a hole the table could not explain."""
    names = [key.removeprefix("test_") for key in results if key.startswith("test_")]
    values = {name: typed(results, f"test_{name}", is_finite, "a number") for name in names if name not in NOT_METRICS}
    return {name: float(value) for name, value in values.items() if value is not None}


def debug_marker(config: Mapping[str, Any]) -> str | None:
    """The debug setting of a run, or None."""
    marker = next((key for key in DEBUG_KEYS if config_value(config, key) not in (None, False, 0)), None)
    return marker or ("task_name=debug" if config_value(config, "task_name") == "debug" else None)


def recipe_of(config: Mapping[str, Any], results: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Settings that can change a run's numbers (results.json's without a saved config): equal ones pool as seeds."""
    # W&B's 'a/b' keys as 'a.b'; an empty mapping (attn.options: {}) sets nothing
    flat = ({key.replace("/", "."): value for key, value in flatten(config).items() if value != {}} if config
            else {KEY_CHOICES[key]: results.get(key) for key in SETTING_KEYS})
    return tuple(sorted((key, json.dumps(value, sort_keys=True, default=str)) for key, value in flat.items()
                        if not any(fnmatchcase(key, pattern) or fnmatchcase(key, f"{pattern}.*")
                                   for pattern in NON_RESULT_KEYS)))


def load_results(path: Path) -> dict[str, Any]:
    """A results.json's object, or UnusableRun saying why the file is not one (never a traceback)."""
    if not path.is_file():  # a FIFO or a device named results.json would block or never end
        raise UnusableRun("not a regular file")
    try:
        text = path.read_bytes().decode("utf-8")
        results = json.loads(text)
    except OSError as error:
        raise UnusableRun(f"unreadable ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise UnusableRun(f"not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise UnusableRun("empty" if not text.strip() else f"not valid JSON (line {error.lineno})") from None
    except RecursionError:
        raise UnusableRun("not valid JSON (nested too deeply)") from None
    if not isinstance(results, dict):
        raise UnusableRun(f"a JSON {type(results).__name__}, not an object")
    return results


def experiment_of(run_dir: Path) -> str | None:
    """A CLI run's experiment (Hydra's runtime.choices), with 'recipe=X' for another recipe chosen apart; else None."""
    choices = config_value(hydra_config(run_dir, "hydra"), "hydra.runtime.choices")
    choices = choices if isinstance(choices, Mapping) else {}
    experiment, recipe = (value if is_name(value := choices.get(key)) else None for key in ("experiment", "recipe"))
    if recipe in (None, "paper") or (experiment or "").startswith(f"{recipe}_"):
        return experiment
    return f"{experiment} recipe={recipe}" if experiment else f"recipe={recipe}"


def collect_runs(root: str | Path) -> list[Run]:
    """Every reportable results.json below `root` (a sweep, a runs folder, or all of outputs/); a line for the rest."""
    root = Path(root)
    check(root.is_dir(), "source", str(root), "an existing directory of runs (a sweep or outputs/)")
    runs = (usable(lambda: run_from_results(load_results(path), str(path.parent), hydra_config(path.parent),
                                            path.stat().st_mtime, experiment_of(path.parent)), str(path))
            for path in sorted(root.rglob(RESULTS_FILE)))
    return [run for run in runs if run is not None]


def first_value(mapping: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first key that has one (W&B runs log costs under final/ or model/)."""
    return next((value for key in keys if (value := config_value(mapping, key)) is not None), None)


def run_from_wandb(run: Any) -> Run | None:
    """A run whose summary has its primary metric's test value, else None (after a line on stderr if unusable)."""
    source = str(getattr(run, "url", None) or getattr(run, "path", "wandb"))
    return usable(lambda: finished_run(run, source), source)


def finished_run(run: Any, source: str) -> Run | None:
    """None for an unfinished run, UnusableRun for one whose config or summary is damaged."""
    config, summary = dict(run.config), dict(run.summary)
    declared = {key: value for key in ("name", "mode") if (value := config_value(config, f"task.primary_metric.{key}"))}
    primary = primary_metric(declared)
    # results.json's test_<name> keys: every final/test_<name> or test/<name> (final/ first)
    names = {match[1] for key in summary if (match := WANDB_TEST_KEY.fullmatch(str(key)))} | {primary.metric}
    tested = {f"test_{name}": value for name in sorted(names)
              if (value := first_value(summary, f"final/test_{name}", f"test/{name}")) is not None}
    choices = {name: config_value(config, key) for name, key in KEY_CHOICES.items()}
    if f"test_{primary.metric}" not in tested or choices["model"] is None:
        return None
    rows = run.history(keys=["epoch", primary.name], pandas=False)
    results = {**choices, "primary_metric": {"name": primary.name, "mode": primary.mode},
               "params": first_value(summary, "final/params", "model/params"),
               "macs": first_value(summary, "final/macs", "model/macs"),
               "epochs": first_value(summary, "final/epochs"),  # results.json's epochs, as train.py logs it
               **tested, "history": [row for row in rows if row.get("epoch") is not None]}
    try:  # POSIX seconds of W&B's ISO created_at
        finished = datetime.fromisoformat(str(run.created_at)).timestamp()
    except (AttributeError, ValueError):
        finished = None
    return run_from_results(results, source, config, finished)


def collect_wandb_runs(project: str) -> list[Run]:
    """The finished runs of W&B `ENTITY/PROJECT` (runs without a test accuracy are skipped)."""
    check(PROJECT_PATH.fullmatch(project or "") is not None, "wandb", project, "ENTITY/PROJECT")
    try:
        import wandb  # only a report of a W&B project needs the package

        found = [run_from_wandb(run) for run in wandb.Api().runs(project)]
    except Exception as error:  # no key, no network, no such project: one line, not a traceback
        raise ConfigError("wandb", project, f"a W&B project you can read ({type(error).__name__}: {error})") from None
    return [run for run in found if run is not None]
