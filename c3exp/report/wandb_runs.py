"""Runs of a W&B project as Run records; not named wandb.py, which would shadow the wandb package."""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from c3exp.config import KEY_CHOICES
from c3exp.errors import ConfigError, check
from c3exp.report.runs import Run, config_value, primary_metric, run_from_results, usable

WANDB_TEST_KEY = re.compile(r"(?:final/test_|test/)(\w+)")  # a test number in a W&B summary
PROJECT_PATH = re.compile(r"[\w.-]+/[\w.-]+")  # ENTITY/PROJECT


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
    declared = {key: value for key in ("name", "mode")
                if (value := config_value(config, f"task.primary_metric.{key}"))}
    primary = primary_metric(declared)
    # results.json's test_<name> keys: every final/test_<name> or test/<name> (final/ first)
    names = {match[1] for key in summary if (match := WANDB_TEST_KEY.fullmatch(str(key)))} | {primary.metric}
    found = {name: first_value(summary, f"final/test_{name}", f"test/{name}") for name in sorted(names)}
    tested = {f"test_{name}": value for name, value in found.items() if value is not None}
    choices = {name: config_value(config, key) for name, key in KEY_CHOICES.items()}
    if f"test_{primary.metric}" not in tested or choices["model"] is None:
        return None
    rows = run.history(keys=["epoch", primary.name], pandas=False)
    results = {**choices, "primary_metric": {"name": primary.name, "mode": primary.mode},
               "params": first_value(summary, "final/params", "model/params"),
               "macs": first_value(summary, "final/macs", "model/macs"),
               "epochs": first_value(summary, "final/epochs"),  # results.json's epochs, as train.py logs it
               **tested, "history": [row for row in rows if row.get("epoch") is not None]}
    created = getattr(run, "created_at", None)
    try:  # POSIX seconds of W&B's ISO created_at
        finished = datetime.fromisoformat(str(created)).timestamp() if created else None
    except ValueError:
        finished = None
    return run_from_results(results, source, config, finished)


def collect_wandb_runs(project: str, api: Any = None) -> list[Run]:
    """The finished runs of W&B `ENTITY/PROJECT` (runs without a test accuracy are skipped)."""
    check(PROJECT_PATH.fullmatch(project or "") is not None, "wandb", project, "ENTITY/PROJECT")
    try:
        if api is None:
            import wandb  # only a report of a W&B project needs the package

            api = wandb.Api()
        found = [run_from_wandb(run) for run in api.runs(project)]
    except Exception as error:  # no key, no network, no such project: one line, not a traceback
        raise ConfigError("wandb", project, f"a W&B project you can read ({type(error).__name__}: {error})") from None
    return [run for run in found if run is not None]
