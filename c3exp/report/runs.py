"""The Run record a report is made of, read from results.json files and the configs saved beside them.

A Run also carries what selection needs to decide whether it counts: its debug marker (debug_marker),
when it finished, and its recipe (recipe_of), the settings that can change its numbers.
"""
from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from c3exp.config import KEY_CHOICES
from c3exp.errors import check
from c3exp.results import RESULTS_FILE, PrimaryMetric, hydra_config, read_results

DEFAULT_TASK = "classification"  # results.json files from before tasks are classification runs
# results.json settings that should agree within a cell; a cell mixing them gets a note (Cell.mixed_settings).
SETTING_KEYS = ("optim", "max_epochs", "batch_size", "lr", "placement")
NOT_METRICS = ("loss",)  # test_<name> numbers of results.json that are not metrics in 0..1
# Config keys that cannot change a run's numbers ('*': any part; a key covers the keys below it). A cell pools
# runs as seeds only when their configs agree on every other key (Run.recipe).
SEED_KEYS = ("seed", "data.seed", "callbacks.epoch_seed.seed")  # the seed, and where the config copies it
NON_RESULT_KEYS = (
    *SEED_KEYS,
    "task_name", "run_name", "output_dir", "hydra", "_wandb", "trainer.default_root_dir",  # names and places
    "logger", "callbacks.*.dirpath", "callbacks.*.filename", "callbacks.channel_correlation",  # what is recorded
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps", "ckpt_path", "resume",  # a resumed run ends as an uninterrupted one (README)
    "trainer.accelerator", "trainer.devices", "trainer.strategy",  # data.batch_size is the global batch (README)
    "trainer.benchmark", "trainer.deterministic", "keep_freed_memory", "bench",  # speed and reproducibility
    "data.num_workers", "data.on_device", "model.channels_last", "model.compile",  # the same draws and network
)


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
    settings: tuple[tuple[str, Any], ...]
    source: str
    debug: str | None = None  # the debug setting the run was made with (debug_marker), else None
    finished: float | None = None  # when it finished (POSIX seconds): the newest run of a seed is kept
    recipe: tuple[tuple[str, str], ...] = ()  # (dotted key, JSON value) of each setting that counts (recipe_of)


def run_from_results(results: Mapping[str, Any], source: str, config: Mapping[str, Any] | None = None,
                     finished: float | None = None) -> Run:
    """A Run from results.json; `config` is the run's composed config, where its debug settings are.

    Results from before tasks have no task and no primary metric: classification, judged by val/acc1.
    """
    primary = PrimaryMetric.of(results.get("primary_metric"))
    return Run(
        task=str(results.get("task") or DEFAULT_TASK),
        primary=primary,
        model=str(results["model"]),
        attn=str(results["attn"]),
        data=str(results["data"]),
        seed=results.get("seed"),
        params=results.get("params"),
        macs=results.get("macs"),
        test_metrics=test_metrics(results),
        curve=validation_curve(results, primary),
        settings=tuple((key, results.get(key)) for key in SETTING_KEYS),
        source=source,
        debug=debug_marker(config or {}) or debug_marker(results),  # the saved config says which debug setting
        finished=finished,
        recipe=recipe_of(config or {}, results),
    )


def validation_curve(results: Mapping[str, Any], primary: PrimaryMetric) -> tuple[tuple[int, float], ...]:
    """(epoch, primary validation metric) of each history row that has it: epochs without validation have none."""
    return tuple((int(row["epoch"]), float(row[primary.name])) for row in results.get("history", [])
                 if row.get(primary.name) is not None)


def test_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """metric -> test value of every test_<metric> number in results (not the loss, not test_ckpt's name)."""
    return {key.removeprefix("test_"): float(value) for key, value in results.items()
            if key.startswith("test_") and key.removeprefix("test_") not in NOT_METRICS and is_number(value)}


def is_number(value: Any) -> bool:
    """A real number, and not a bool (True is an int to Python, not a metric)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def config_value(config: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a config, nested or flattened with '.' or '/' (W&B's); None if absent."""
    for flat in (dotted, dotted.replace(".", "/")):
        if flat in config:
            return config[flat]
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def debug_marker(config: Mapping[str, Any]) -> str | None:
    """The setting that makes a run a debug run (conf/debug/*), or None.

    fast_dev_run tests one batch and overfit_batches trains on a few: neither accuracy belongs in a
    table, and results.json still reports the recipe's max_epochs. limit_*_batches alone is not a
    marker: it also makes legitimately small runs.
    """
    if config_value(config, "trainer.fast_dev_run") not in (None, False, 0):
        return "trainer.fast_dev_run"
    if config_value(config, "trainer.overfit_batches") not in (None, 0, 0.0):
        return "trainer.overfit_batches"
    if config_value(config, "task_name") == "debug":
        return "task_name=debug"
    return None


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value of a nested config; W&B's flattened keys ('a.b', 'a/b') read the same.

    An empty mapping (attn.options: {}) has no leaves: it sets nothing, as if absent.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = prefix + str(key).replace("/", ".")
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_non_result(key: str) -> bool:
    """Whether a dotted config key is one of NON_RESULT_KEYS, or below one."""
    return any(fnmatchcase(key, pattern) or fnmatchcase(key, f"{pattern}.*") for pattern in NON_RESULT_KEYS)


def recipe_of(config: Mapping[str, Any], results: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Every setting that can change a run's numbers: only runs with equal recipes are seeds of one mean.

    The saved config less NON_RESULT_KEYS; a run without one (results.json alone): results.json's settings.
    """
    flat = flat_config(config) if config else {KEY_CHOICES[key]: results.get(key) for key in SETTING_KEYS}
    return tuple(sorted((key, json.dumps(value, sort_keys=True, default=str)) for key, value in flat.items()
                        if not is_non_result(key)))


def collect_runs(root: str | Path) -> list[Run]:
    """Every results.json below `root` (a sweep, a runs folder, or all of outputs/)."""
    root = Path(root)
    check(root.is_dir(), "source", str(root), "an existing directory of runs (a sweep or outputs/)")
    return [run_from_results(read_results(path), str(path.parent), hydra_config(path.parent), path.stat().st_mtime)
            for path in sorted(root.rglob(RESULTS_FILE))]
